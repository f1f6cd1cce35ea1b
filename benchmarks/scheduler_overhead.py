"""The CPU that Snakemake's own scheduling takes beside the jobs, per scheduler.

    python benchmarks/scheduler_overhead.py --workdir CLONE [--seconds 120] [--schedulers ilp greedy]
        [--snakemake-args "--config ..."] [--out benchmarks/results/scheduler-overhead-<date>.json]

For each scheduler, in turn: empty CLONE's ``results/`` (and ``.snakemake/``), start ``snakemake
--cores 2 --scheduler S`` (rule all, the default config) there and stop it after ``--seconds``.
Measured: the CPU seconds of Snakemake's own process (not its children: the jobs) and of the
solver processes (CBC, for ``ilp``), polled every 20 ms (a solver run shorter than that can be
missed: a lower bound), and the jobs finished. ``--snakemake-args`` go to both runs (e.g. a
configfile with ``fig5: {batched: false}``, so that more, shorter jobs end within the window).
CLONE must be a clone of this repository beside ``shared/``; its results are deleted. On 2 cores
that CPU is taken from the jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psutil

from eosflow.results import git_head, machine


def run(workdir: Path, scheduler: str, seconds: float, extra: list[str]) -> dict:
    for name in ("results", ".snakemake"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), MPLBACKEND="Agg")
    solver: dict[int, float] = {}  # CPU seconds of each solver process, as last seen
    with open(workdir / f"scheduler_{scheduler}.log", "w") as log:
        p = subprocess.Popen(["snakemake", "--cores", "2", "--scheduler", scheduler, *extra], cwd=workdir, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc, own, t0 = psutil.Process(p.pid), 0.0, time.time()
        while time.time() - t0 < seconds and p.poll() is None:
            try:
                c = proc.cpu_times()
                own = c.user + c.system
                for child in proc.children(recursive=True):
                    if "cbc" in child.name().lower():
                        t = child.cpu_times()
                        solver[child.pid] = t.user + t.system
            except psutil.NoSuchProcess:  # a solver ended between the listing and the reading
                pass
            time.sleep(0.02)
        if p.poll() is not None:
            raise SystemExit(f"snakemake ended (exit {p.returncode}) before {seconds} s: see {log.name}")
        os.killpg(p.pid, signal.SIGTERM)
        p.wait()
    jobs = len(list((workdir / "results/benchmarks").rglob("*.tsv")))
    return {"scheduler": scheduler, "seconds": seconds, "jobs_finished": jobs,
            "snakemake_cpu_s": round(own, 2), "solver_runs_seen": len(solver), "solver_cpu_s": round(sum(solver.values()), 2),
            "per_job_s": round((own + sum(solver.values())) / max(jobs, 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--schedulers", nargs="+", default=["ilp", "greedy"])
    ap.add_argument("--snakemake-args", default="", help="more arguments for both runs (one string)")
    ap.add_argument("--out", type=Path, default=Path(f"benchmarks/results/scheduler-overhead-{date.today()}.json"))
    args = ap.parse_args()
    rows = [run(args.workdir.resolve(), s, args.seconds, shlex.split(args.snakemake_args)) for s in args.schedulers]
    report = {"command": shlex.join(["python", "benchmarks/scheduler_overhead.py", *sys.argv[1:]]),
              "commit": git_head(args.workdir), "machine": machine(), "rows": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
