"""fig5's sweep as one job per run against one train_group job per setting and seed, from two
rule-all builds' benchmark files.

    python benchmarks/batched_sweep_jobs.py --runs BUILD_A --groups BUILD_B [--out FILE]

BUILD_A built with ``fig5.batched: false`` (its ``results/benchmarks/train/sweep/<setting>/const/
*_seed<s>.tsv``), BUILD_B with ``fig5.batched: true`` (``results/benchmarks/train_group/sweep/
<setting>/seed<s>.tsv``); both ``snakemake --cores 2`` from an empty ``results/``, so every job
shared the 2 cores with one other. Per setting and seed: the runs' seconds summed, the group's
seconds, and what the group saved; and ``same_jobs``: the jobs that did the same work in both
builds, timed in each (how much the machine's speed moved between the builds).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from eosflow.results import benchmark_seconds
from eosflow.results import git_head


def compare(runs: Path, groups: Path) -> list[dict]:
    rows = []
    for g in sorted((groups / "results/benchmarks/train_group/sweep").glob("*/seed*.tsv")):
        setting, seed = g.parent.name, g.stem[len("seed"):]
        singles = sorted((runs / f"results/benchmarks/train/sweep/{setting}/const").glob(f"*_seed{seed}.tsv"))
        one_each, group = sum(benchmark_seconds(f) for f in singles), benchmark_seconds(g)
        rows.append({"setting": setting, "seed": int(seed), "runs": len(singles), "one_job_per_run_s": round(one_each, 1),
                     "group_s": round(group, 1), "saved_s": round(one_each - group, 1),
                     "ratio": round(one_each / group, 2)})
    return rows


# jobs whose work differs between the two builds: fig5's sweep runs and what reads them
DIFFERENT_WORK = ("sweep/", "ablation", "figures/", "layer_spectra/")


def same_jobs(runs: Path, groups: Path, exclude=DIFFERENT_WORK) -> dict:
    """The jobs of both builds that did the same work (the same benchmark file, outside ``exclude``):
    their seconds summed in each build, and the ratio: how much faster or slower the machine ran
    the same jobs in the second build."""
    root_a, root_b = runs / "results/benchmarks", groups / "results/benchmarks"
    names = [f.relative_to(root_a) for f in root_a.rglob("*.tsv")]
    names = [n for n in names if (root_b / n).exists() and not any(x in str(n) for x in exclude)]
    a, b = sum(benchmark_seconds(root_a / n) for n in names), sum(benchmark_seconds(root_b / n) for n in names)
    return {"jobs": len(names), "excluded": list(exclude), "runs_build_s": round(a, 1), "groups_build_s": round(b, 1),
            "ratio": round(b / a, 3) if a else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--groups", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(f"benchmarks/results/batched-sweep-{date.today()}.json"))
    args = ap.parse_args()
    rows = compare(args.runs, args.groups)
    total = {k: round(sum(r[k] for r in rows), 1) for k in ("one_job_per_run_s", "group_s", "saved_s")}
    report = {"command": f"python benchmarks/batched_sweep_jobs.py --runs {args.runs} --groups {args.groups}",
              "runs_build_commit": git_head(args.runs), "groups_build_commit": git_head(args.groups),
              "rows": rows, "total": total, "same_jobs": same_jobs(args.runs, args.groups)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
