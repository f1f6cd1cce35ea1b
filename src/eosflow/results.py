"""Every number in the README from a committed file: the default build's snapshot, the calibration
of the claims procedures, the benchmark results, and the README tables generated from them.

- ``python -m eosflow results snapshot --wall-time-s S ...`` collects the claims files of a finished
  build (``figures/**/*.claims.json``) with the commit, the machine and the build's wall time into
  ``docs/results/default.json``.
- ``python -m eosflow results calibration`` computes the false-``holds`` rates and the power table of
  the claims procedures (:mod:`eosflow.claims.calibration`) into ``docs/results/calibration.json``.
- ``python -m eosflow results`` rewrites the README's generated blocks (between
  ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``) from those files and from
  ``benchmarks/results/``; ``--check`` only reports the blocks that differ (the tests run it).

No torch here.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .files import read_json, write_json

__all__ = ["SNAPSHOT", "CALIBRATION", "BENCH", "PERTURBED", "verdict_changes", "snapshot", "calibration", "render_block", "render_readme",
           "check_readme", "BLOCKS"]

SNAPSHOT = Path("docs/results/default.json")
CALIBRATION = Path("docs/results/calibration.json")
BENCH = Path("benchmarks/results/cpu-2026-12-06d.json")
CLAMP_COST = Path("benchmarks/results/clamp-cost-cpu-2026-12-06b.json")
HVP_CHOICE = Path("benchmarks/results/hvp-choice-cpu-2026-12-06.json")
PAPER_SCALE = Path("benchmarks/results/paper-scale-estimate-2026-12-06b.json")
BENCH_RESIDUAL = Path("benchmarks/results/cpu-residual-2026-12-06.json")
BENCH_ENGINE = Path("benchmarks/results/cpu-engine-2026-12-06b.json")
BENCH_VGG = Path("benchmarks/results/cpu-vgg-small-2026-12-06b.json")
BENCH_VGG_CLAMP = Path("benchmarks/results/cpu-vgg-clamp-2026-12-06.json")
PERTURBED = Path("docs/results/perturbed.json")
_BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


# --------------------------------------------------------------------------- collecting
def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def git_head(root: Path) -> str:
    """The commit checked out at ``root`` ("" outside a git work tree)."""
    return _git(root, "rev-parse", "HEAD")


def machine() -> dict:
    """The machine a build ran on: CPU model, cores, memory, Python and torch versions."""
    cpu, mem = platform.processor() or platform.machine(), None
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))
        mem = round(kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "torch": torch, "system": platform.system()}


def _claim_row(c: dict) -> dict:
    keep = ("id", "name", "value", "threshold", "verdict", "kind", "interval", "interval_kind", "p_holds",
            "p_fails", "needed", "needed_note", "values", "evidence", "reason")
    row = {k: c.get(k) for k in keep}
    if c.get("family"):
        row["family"] = {k: c["family"][k] for k in ("rule", "over", "deciding", "options")}
    return row


def benchmark_seconds(tsv: Path) -> float | None:
    """A job's wall seconds from its Snakemake benchmark file (the first column of its first row;
    None for a file without one)."""
    lines = Path(tsv).read_text().splitlines()
    return float(lines[1].split("\t")[0]) if len(lines) >= 2 else None


def job_stats(results: Path) -> dict:
    """Per rule, from Snakemake's benchmark files: its jobs, their seconds in all, and its longest
    and shortest job (seconds; the longest's benchmark file, whose name carries its wildcards)."""
    out: dict[str, dict] = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        sec = benchmark_seconds(tsv)
        if sec is None:
            continue
        rel = tsv.relative_to(results / "benchmarks")
        r = out.setdefault(rel.parts[0], {"jobs": 0, "seconds": 0.0, "longest_s": -1.0, "longest": None,
                                          "shortest_s": float("inf")})
        r["jobs"] += 1
        r["seconds"] = round(r["seconds"] + sec, 1)
        r["shortest_s"] = min(r["shortest_s"], sec)
        if sec > r["longest_s"]:
            r["longest_s"], r["longest"] = sec, rel.with_suffix("").as_posix()
    return out


#: What a job script imports before its work (Snakemake's script preamble, the train and hessian
#: jobs' modules): the start-up every job of rule all pays.
JOB_IMPORTS = "import snakemake.script, eosflow.jobs.train, eosflow.jobs.hessian, eosflow.logs"


def job_start_seconds(reps: int = 5) -> float:
    """Seconds to start one job's process: a fresh interpreter importing :data:`JOB_IMPORTS` (the
    median of ``reps``; with a warm file cache, as in a build)."""
    import statistics
    import sys
    import time

    times = []
    for _ in range(reps + 1):  # the first fills the file cache and is not counted
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", JOB_IMPORTS], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times[1:]), 3)


def snapshot(figures: Path, out: Path = SNAPSHOT, *, wall_time_s: float, command: str, config: Path,
             results: Path = Path("results"), started: str | None = None, extra: dict | None = None,
             start_s: float | None = None) -> dict:
    """Collect every claims file under ``figures`` into ``out`` with the commit, the machine, the
    build's command and wall time, the config's sha256, the job seconds per rule (and per rule its
    jobs, longest and shortest: :func:`job_stats`) and, when given, ``start_s``: one job's start-up
    in seconds (:func:`job_start_seconds`, which ``python -m eosflow results snapshot`` measures)."""
    from .claims import REGISTRY

    root = Path(figures).resolve().parent
    stats = job_stats(Path(results))  # CPU-job seconds per rule, from Snakemake's benchmark files
    figs = {}
    for path in sorted(Path(figures).rglob("*.claims.json")):
        d = read_json(path, "claims file")
        figs[d["figure"]] = {"verdicts": d["verdicts"], "all_hold": d["all_hold"],
                             "claims": [_claim_row(c) for c in d["claims"]]}
    data = {"kind": "eosflow default build", "commit": git_head(root),
            "dirty": bool(_git(root, "status", "--porcelain", "--untracked-files=no")),
            "machine": machine(), "build": {"command": command, "wall_time_s": round(float(wall_time_s), 1),
                                            "started": started, "collected": datetime.now(timezone.utc).isoformat(
                                                timespec="seconds")},
            "config_sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest(),
            "registry": {"version": REGISTRY.version, "hash": REGISTRY.hash},
            "job_seconds_by_rule": {rule: st["seconds"] for rule, st in stats.items()}, "jobs_by_rule": stats,
            **({"job_start_s": start_s} if start_s is not None else {}), "figures": figs, **(extra or {})}
    write_json(data, out)
    return data


def calibration(trials: int, out: Path = CALIBRATION) -> dict:
    """The calibration table (``trials`` per row, at every seed count the configs use) and the power
    table, written to ``out``."""
    from .claims import calibration as cal
    from .claims.procedures import ALPHA

    rows = cal.calibration_table(trials, seeds=cal.ALL_SEEDS)
    data = {"alpha": ALPHA, "trials": trials, "nulls": list(cal.NULLS), "block": cal.BLOCK,
            "rows": rows, "rechecks": cal.recheck_table(rows), "power": cal.power_table(),
            "old_rules": cal.old_rules_table()}
    write_json(data, out)
    return data


# --------------------------------------------------------------------------- rendering
def _f(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, int):  # bool included
        return str(x)
    return f"{x:.{digits}g}"


def _interval(c: dict) -> str:
    iv = c.get("interval")
    if iv is None:
        if c.get("interval_kind") != "confidence":
            return "–"
        return "none (too few seeds)" if len(c.get("values") or []) < 6 else "none (an end is infinite)"
    text = f"[{_f(iv[0])}, {_f(iv[1])}]"
    return text + (" (null band)" if c.get("interval_kind") == "null band" else "")


def _needed(c: dict) -> str:
    if c["verdict"] != "undetermined":
        return ""
    if c.get("needed") is not None:
        return f"{c['needed']} seeds"
    return c.get("needed_note") or "–"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x).replace("|", "/") for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _build_line(s: dict) -> str:
    m, b = s["machine"], s["build"]
    minutes = b["wall_time_s"] / 60
    built = s.get("runs_built_at")
    at = (f"runs built at commit `{built[:10]}`, figures and claims redrawn at `{s['commit'][:10]}` (the same "
          f"runs: no run depends on what changed between them)" if built and built != s["commit"]
          else f"commit `{s['commit'][:10]}`")
    return (f"`{b['command']}` from an empty `results/`: **{minutes:.1f} min** wall time, timed end to end "
            f"on {m['cores']} cores ({m['cpu']}, {m['memory_gib']} GiB); {at}"
            f"{' with uncommitted changes' if s.get('dirty') else ''}; claims registry version "
            f"{s['registry']['version']} (`docs/results/default.json`).\n")


def render_status(root: Path) -> str:
    s = read_json(root / SNAPSHOT, "results snapshot")
    rows = [[f"`{fig}`", d["verdicts"]["holds"], d["verdicts"]["fails"], d["verdicts"]["undetermined"]]
            for fig, d in s["figures"].items()]
    total = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    rows.append(["all", *total])
    return _build_line(s) + "\n" + _where_time_goes(s) + _table(["figure", "holds", "fails", "undetermined"], rows)


def _where_time_goes(s: dict) -> str:
    """The build's job time by rule (with each rule's jobs and longest job, where recorded) and what
    starting the jobs costs."""
    jobs = s.get("job_seconds_by_rule") or {}
    if not jobs:
        return ""
    stats = s.get("jobs_by_rule") or {}

    def rule(name: str, sec: float) -> str:
        st = stats.get(name)
        more = (f" ({st['jobs']} job{'' if st['jobs'] == 1 else 's'}, the longest {st['longest_s']:.0f} s: `{st['longest']}`)" if st else "")
        return f"{name} {sec / 60:.1f}{more}"

    by_rule = ("; " if stats else ", ").join(rule(r, sec) for r, sec in sorted(jobs.items(), key=lambda kv: -kv[1]))
    text = (f"Job time by rule, in minutes (one thread a job, two jobs at a time; Snakemake's benchmark files): "
            f"{by_rule}.")
    start, n = s.get("job_start_s"), sum(st["jobs"] for st in stats.values())
    if start is not None and n:
        total = sum(jobs.values())
        text += (f" Starting a job (a fresh Python importing Snakemake's script module and the job modules, "
                 f"torch and xarray with them) takes {start:.2f} s, measured when the build was collected: "
                 f"{n} jobs spend about {n * start / 60:.1f} job-minutes starting, "
                 f"{100 * n * start / total:.0f} % of the {total / 60:.1f} job-minutes.")
    return text + "\n\n"


def render_claims(root: Path) -> str:
    s = read_json(root / SNAPSHOT, "results snapshot")
    rows = []
    for fig, d in s["figures"].items():
        for c in d["claims"]:
            values = ", ".join(_f(v) for v in c.get("values") or [])
            rows.append([f"`{fig}`", c["name"], f"{_f(c['value'])} {c['threshold']}", _interval(c),
                         f"**{c['verdict']}**", _needed(c), c["kind"], values])
    return _table(["figure", "claim", "value vs threshold", "95 % interval", "verdict", "would decide",
                   "test", "per-seed values"], rows)


def render_calibration(root: Path) -> str:
    d = read_json(root / CALIBRATION, "calibration results")
    seeds = sorted({r["seeds"] for r in d["rows"]})
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in d["rows"]):
        for null in d["nulls"]:
            cells = []
            for n in seeds:
                r = next(r for r in d["rows"] if r["kind"] == kind and r["null"] == null and r["seeds"] == n)
                flag = "" if max(r[">"], r["<"]) <= r["limit"] else " **over**"
                cells.append(f"{100 * r['>']:.2f} / {100 * r['<']:.2f}{flag}")
            rows.append([kind, null, *cells])
    limit = next(iter(d["rows"]))["limit"]
    again = "".join(
        f"\nRechecked ({r['kind']}, {r['null']}, {r['seeds']} seeds: over its limit above; with some 250 cells "
        f"at 3 standard errors one or two are over by chance): {r['trials']:,} fresh trials give "
        f"{100 * r['>']:.2f} / {100 * r['<']:.2f} % (limit {100 * r['limit']:.2f} %)"
        f"{', **still over**' if max(r['>'], r['<']) > r['limit'] else ', within it'}.\n"
        for r in d.get("rechecks", []))
    old = d.get("old_rules", [])
    boot = ", ".join(f"{100 * r['rate']:.1f} % at {r['seeds']}" for r in old if r["rule"] == "bootstrap")
    best = next((r for r in old if r["rule"] == "best_of_3"), None)
    before = (f"\nThe rules these replaced, under the normal null (claim above the bound): the percentile "
              f"bootstrap interval over seeds held {boot} seeds" + (
                  f"; the best of three options with no effect, chosen after the data, {100 * best['rate']:.1f} % "
                  f"at 3 seeds" if best else "") + ".\n") if old else ""
    return (f"False-`holds` rate in % (claim above the bound / claim below it), {d['trials']:,} trials per "
            f"cell; nominal {100 * d['alpha']:.1f} %, limit {100 * limit:.2f} % (+3 Monte-Carlo standard "
            f"errors); rank blocks of {d['block']} runs (`docs/results/calibration.json`).\n\n"
            + _table(["kind", "null", *[f"{n} seeds" for n in seeds]], rows) + again + before)


def render_power(root: Path) -> str:
    d = read_json(root / CALIBRATION, "calibration results")
    rows = [[r["seeds"], _f(r["mean"]), _f(r["median"]), _f(r["rank_9"]), _f(r["rank_3x5"])] for r in d["power"]]
    return _table(["seeds", "mean, paired: effect / sd", "median: P(seed on the claim's side)",
                   "rank: mean Spearman, 9 runs a seed", "rank: 3 blocks of 5 a seed"], rows)


def render_speed(root: Path, path: Path = BENCH, measured_only: bool = False, only: tuple = ()) -> str:
    """A benchmark file's targets table (``measured_only``: the rows it measured; ``only``: those targets)."""
    d = read_json(root / path, "benchmark results")
    rows = []
    for name, t in d["targets"].items():
        if (measured_only and t.get("ratio") is None) or (only and name not in only):
            continue
        asked = "reported" if t.get("target") is None else f"{t['compare']} {_f(t['target'])}"
        met = {True: "met", False: "**missed**", None: "–"}[t.get("met")]
        rows.append([name, _f(t["ratio"]), asked, met, t.get("note", "")])
    return (f"`{path}`: {d['machine']}, {d['cpu_count']} cores, {d['torch_threads']} torch threads, torch "
            f"{d['torch']}, {_f(d['wall_s'] / 60)} min.\n\n" + _table(["target", "measured", "asked", "", "detail"], rows))


def render_residual(root: Path) -> str:
    """The benchmark's residual workload (a user's model through a DataLoader) against the peers."""
    d = read_json(root / BENCH_RESIDUAL, "residual benchmark results")
    w = d["workloads"]["residual"]
    rows = []
    for name, c in w["cold"].items():
        diffs = c["agreement"]["max_rel_diff"]
        for m, e in c["methods"].items():
            cal = e.get("calibration") or {}
            knob = f"{cal['knob']} {_f(cal['setting'])}" if cal.get("setting") is not None else "–"
            if "time_s" not in e:
                rows.append([name, m, e.get("failed") or e.get("skipped"), "", "", "", "", knob])
                continue
            rows.append([name, m + (f" [{e['product']}]" if e.get("product") else ""), f"{_f(e['time_s'])} s",
                         e["n_matvec"], f"{e['peak_rss_mb']:.0f} MB (+{e['extra_rss_mb']:.0f})",
                         _f(e["max_residual"], 2), _f(diffs.get(m), 2), knob])
    h = w["hvp_cost"]
    kinds = "; ".join(f"{k} {_f(e['x_grad'])}" + (f" [{e['product']}]" if k == "auto" else "") if "x_grad" in e
                      else f"{k}: unavailable" for k, e in h["kinds"].items())
    targets = "\n".join(f"- `{k}`: {_f(t['ratio'])} ({t['compare']} {_f(t['target'])}): "
                         f"{ {True: 'met', False: '**missed**', None: 'not measured'}[t['met']]}"
                         for k, t in d["targets"].items() if k.startswith(("7_", "8_")))
    i = w["info"]
    return (f"`{BENCH_RESIDUAL}` (`{d.get('command')}`): {d['machine']}, {d['cpu_count']} cores, "
            f"{d['torch_threads']} torch threads, torch {d['torch']}, {_f(d['wall_s'] / 60)} min; {i['n_params']} "
            f"parameters, {i['n_examples']} images ({i['data']}), {i['loader']}, eosflow's objective from the "
            f"{i['eosflow_objective']}; times are medians of {w['cold']['top1']['reps']}.\n\n"
            + _table(["rows", "method", "time", "HVPs", "peak RSS (+call)", "max residual", "eigenvalues vs float64",
                      "peer's knob (calibrated)"], rows)
            + f"\nOne HVP in gradients (gradient {_f(h['grad_s'])} s): {kinds}.\n\n" + targets + "\n")


def render_clamp_cost(root: Path) -> str:
    d = read_json(root / CLAMP_COST, "clamp cost results")
    plain = d["rows"]["plain"]["s_per_step"]
    rows = [["plain GD", f"{1e3 * plain:.3g} ms", "1", "–", "–", "–", "–"]]
    for name, r in d["rows"].items():
        if name != "plain":
            rows.append([name, f"{1e3 * r['s_per_step']:.3g} ms", _f(r["ratio_vs_plain"]),
                         f"{r['solves']} of {d['epochs'] + 1}", r["misses"], _f(r["hvps_per_measurement_median"]),
                         _f(r["max_lr_s_over_2clamp"], 4)])
    return (f"`{CLAMP_COST}`: {d['workload']}, eta = {_f(d['lr'])} (2 eta_eos), {d['epochs']} epochs, "
            f"{d['torch_threads']} thread.\n\n"
            + _table(["step", "time a step", "x plain", "full solves", "misses", "products a solve",
                      "max eta_t S / (2 clamp), every step"], rows))


def render_hvp_choice(root: Path) -> str:
    d = read_json(root / HVP_CHOICE, "hvp choice results")
    label = {"revrev": "double backward", "fwdrev": "torch.func.jvp", "cached": "retained graph",
             "rop_fresh": "R-operator, fresh", "rop": "R-operator, primal kept",
             "grad_rop": "gradient from the R-operator's primal pass"}
    layouts = {"nchw": "NCHW", "channels_last": "channels-last"}
    for layout, layout_name in layouts.items():  # the R-operator in the layout it does not take by default
        for k in ("rop_fresh", "rop", "grad_rop"):
            label[f"{k}_{layout}"] = f"{label[k]}, {layout_name}"
    kinds = [k for k in label if any(k in w["products"] for w in d["workloads"].values())]
    rows = [[label[k], *[_f(w["products"].get(k, {}).get("x_grad")) for w in d["workloads"].values()]] for k in kinds]
    convs = [f"{n} {layouts[w['rop_layout']]}" for n, w in d["workloads"].items()
             if any(k.startswith("rop_fresh_") for k in w["products"])]
    note = (f" The R-operator's rows without a layout are in its default one ({', '.join(convs)}), those "
            "with one in the other." if convs else "")
    return (f"`{HVP_CHOICE}`: one product in gradients' cost, {d['n_images']} images, {d['torch_threads']} "
            f"threads.{note}\n\n" + _table(["product", *d["workloads"]], rows))


#: the clamp rows of the benchmark and the hvp-choice workload with the same network
CLAMP_FLOOR_ROWS = {"5_mlp_clamp": ("mlp", "mlp_199k"), "5_vgg_clamp": ("vgg", "vgg_bn")}


def render_clamp_floor(root: Path, target: float = 3.0) -> str:
    """The exact clamp's floor per benchmark row: a clamped step is one primal pass (its gradient
    shared with the solve) plus the solve's products, so in gradients it costs at least
    ``grad_rop + p · rop`` (the hvp-choice costs; ``p`` the run's products a solve), and ``target``
    times a plain step allows at most ``(target − grad_rop) / rop`` products a solve."""
    bench, choice = read_json(root / BENCH, "benchmark results"), read_json(root / HVP_CHOICE, "hvp choice results")
    rows = []
    for name, (w, c) in CLAMP_FLOOR_ROWS.items():
        clamp = bench["workloads"].get(w, {}).get("clamp")
        costs = choice["workloads"].get(c, {}).get("products", {})
        if not clamp or "rop" not in costs or "grad_rop" not in costs:
            continue
        p, rop, grad = clamp["n_matvec_per_measurement"]["mean"], costs["rop"]["x_grad"], costs["grad_rop"]["x_grad"]
        rows.append([name, _f(p), _f(rop), _f(grad), _f(grad + p * rop), _f(clamp["ratio_clamped_vs_plain"]),
                     _f((target - grad) / rop, 2)])
    return (f"`{BENCH}` (products a solve, measured ratio) and `{HVP_CHOICE}` (costs in gradients, "
            f"{choice['n_images']} images, {choice['torch_threads']} threads).\n\n"
            + _table(["row", "products a solve (mean)", "a product (x gradient)", "the solve's pass with the "
                      "gradient (x gradient)", "pass + products (x gradient)", "measured (x plain step)",
                      f"products a solve that {_f(target)}x allows"], rows))


def render_paper_scale(root: Path) -> str:
    d = read_json(root / PAPER_SCALE, "paper-scale estimate")
    v, c = d["vgg_run"], d["clamp_model"]
    costs = d["per_setting_costs"]
    rows = [[name, e["params"], e["n_train"], f"{_f(e['grad_s'])} s",
             f"{_f(e['hvp_in_grads'])} (+{_f(e['primal_in_grads'])})"] for name, e in costs.items()]
    groups: dict[str, list[float]] = {}
    for r in d["rows"]:
        g = groups.setdefault(r["setting"], [0, 0.0, 0.0])
        g[0] += r["runs"]
        g[1] += r["gradients_steps"] + r["gradients_products"]
        g[2] += r["cpu_hours"]
    by_setting = [[name, g[0], f"{g[1]:.3g}", _f(g[2])] for name, g in sorted(groups.items(), key=lambda x: -x[1][2])]
    return (f"`{PAPER_SCALE}` ({d['kind']}, {d['threads']} threads): the paper's VGG trained {v['epochs']} epochs "
            f"({v['status']}) at {_f(v['lr_multiple'])} η_eos on synthetic CIFAR-shaped images with paper.yaml's "
            f"train block: {_f(v['s_per_epoch'])} s an epoch = {_f(v['grads_per_epoch'])} gradients, in-loop S every "
            f"{v['sharpness_every']} epochs at {_f(v['inloop_hvps_mean'])} products. Clamped twins: a full solve at "
            f"{_f(100 * c['solve_fraction'])} % of the steps, {_f(c['hvps_per_solve'])} products each (measured on "
            f"the default MLP, `{c['source']}`).\n\n"
            + _table(["setting", "parameters", "images", "gradient", "HVP in gradients (+ primal pass)"], rows)
            + "\n" + _table(["setting", "runs", "gradient-equivalents", "CPU-hours"], by_setting)
            + f"\nTotal: {d['total_gradients']:.3g} gradient-equivalents, about {_f(d['total_cpu_hours'])} CPU-hours "
              f"on this machine. {d['gpu'][:1].upper() + d['gpu'][1:]}.\n")


def verdict_changes(a: dict, b: dict) -> list[dict]:
    """The claims of snapshot ``a`` matched in ``b`` by figure, id and name, with both verdicts and
    whether a change is acceptable: never between holds and fails; to or from undetermined only for a
    claim whose ``needed`` (where undetermined) exceeds the seeds it had. A claim missing from ``b``
    is a row with verdict ``missing`` (never acceptable)."""
    rows = []
    for fig, d in a["figures"].items():
        other = {(c.get("id"), c["name"]): c for c in b["figures"].get(fig, {}).get("claims", [])}
        for c in d["claims"]:
            o = other.get((c.get("id"), c["name"]), {"verdict": "missing", "needed": None, "evidence": {}})
            flip = {c["verdict"], o["verdict"]} == {"holds", "fails"}
            und = [x for x in (c, o) if x["verdict"] == "undetermined"]
            seeds = max((x.get("evidence") or {}).get("seeds", 0) for x in (c, o))
            ok = c["verdict"] == o["verdict"] or (not flip and o["verdict"] != "missing" and all(
                x.get("needed") is None or x["needed"] > seeds for x in und))
            rows.append({"figure": fig, "name": c["name"], "a": c["verdict"], "b": o["verdict"], "flip": flip,
                         "acceptable": ok, "needed": [x.get("needed") for x in und], "seeds": seeds})
    return rows


def render_robustness(root: Path) -> str:
    a, b = read_json(root / SNAPSHOT, "results snapshot"), read_json(root / PERTURBED, "perturbed snapshot")
    rows = verdict_changes(a, b)
    changed = [r for r in rows if r["a"] != r["b"]]
    flips = sum(r["flip"] for r in changed)
    bad = sum(not r["acceptable"] for r in changed)
    built = (f"runs built at `{b['runs_built_at'][:10]}`, figures and claims redrawn at `{b['commit'][:10]}`"
             if b.get("runs_built_at") else f"commit `{b['commit'][:10]}`")
    head = (f"Every network's θ₀ perturbed by a relative {b.get('perturb_theta0', '?')} (`perturb_theta0`), "
            f"rule all rebuilt in {b['build']['wall_time_s'] / 60:.1f} min (`docs/results/perturbed.json`, {built}; "
            f"`{b['build']['command']}`): **{len(changed)} of "
            f"{len(rows)} verdicts changed**, {flips} between holds and fails, {bad} to or from undetermined "
            f"with `needed` at or below the seeds used.\n")
    if not changed:
        return head
    return head + "\n" + _table(["figure", "claim", "default", "perturbed", "needed (undetermined)"],
                                 [[f"`{r['figure']}`", r["name"], r["a"], r["b"],
                                   ", ".join("–" if n is None else str(n) for n in r["needed"])] for r in changed])


BLOCKS = {"robustness": render_robustness, "status": render_status, "claims": render_claims, "calibration": render_calibration,
          "power": render_power, "speed": lambda root: render_speed(root, BENCH, measured_only=True), "clamp-cost": render_clamp_cost,
          "speed-engine": lambda root: render_speed(root, BENCH_ENGINE, measured_only=True),
          "speed-vgg": lambda root: render_speed(root, BENCH_VGG, only=("4_vgg_tracking",)),
          "speed-vgg-clamp": lambda root: render_speed(root, BENCH_VGG_CLAMP, only=("5_vgg_clamp",)),
          "hvp-choice": render_hvp_choice, "clamp-floor": render_clamp_floor, "paper-scale": render_paper_scale,
          "residual": render_residual}


def render_block(name: str, root: Path = Path(".")) -> str:
    if name not in BLOCKS:
        raise ValueError(f"unknown README block {name!r}; known: {sorted(BLOCKS)}")
    return BLOCKS[name](Path(root))


def render_readme(text: str, root: Path = Path(".")) -> str:
    """``text`` with every generated block rewritten from the committed files under ``root``."""
    return _BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), root) + m.group(4), text)


def check_readme(readme: Path = Path("README.md"), root: Path | None = None) -> list[str]:
    """The names of the README's generated blocks that differ from a fresh rendering."""
    root = Path(readme).resolve().parent if root is None else Path(root)
    text = Path(readme).read_text()
    return [m.group("name") for m in _BLOCK.finditer(text)
            if m.group("body") != render_block(m.group("name"), root)]


def write_readme(readme: Path = Path("README.md")) -> list[str]:
    """Rewrite the README's generated blocks; returns the names of those that changed."""
    text = Path(readme).read_text()
    new = render_readme(text, Path(readme).resolve().parent)
    changed = [a.group("name") for a, b in zip(_BLOCK.finditer(text), _BLOCK.finditer(new))
               if a.group("body") != b.group("body")]
    if changed:
        Path(readme).write_text(new)
    return changed


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m eosflow results",
                                description="regenerate the README's tables from the committed results")
    p.add_argument("what", nargs="?", choices=["readme", "snapshot", "calibration"], default="readme")
    p.add_argument("--check", action="store_true", help="only report README blocks that differ (exit 1)")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--figures", default="figures", help="snapshot: the build's figures folder")
    p.add_argument("--results", default="results", help="snapshot: the build's results folder")
    p.add_argument("--config", default="config/config.yaml", help="snapshot: the build's config")
    p.add_argument("--wall-time-s", type=float, help="snapshot: the build's wall time, timed end to end")
    p.add_argument("--command", default="snakemake --cores 2", help="snapshot: the build's command")
    p.add_argument("--started", default=None, help="snapshot: when the build started (ISO time)")
    p.add_argument("--out", default=None)
    p.add_argument("--perturb-theta0", type=float, default=0.0, help="snapshot: the build's perturb_theta0")
    p.add_argument("--build-commit", default=None,
                   help="snapshot: the commit the runs were built at, when the figures were redrawn at a later one")
    p.add_argument("--trials", type=int, default=20_000, help="calibration: trials per cell")
    a = p.parse_args(argv)
    if a.what == "snapshot":
        if a.wall_time_s is None:
            p.error("snapshot needs --wall-time-s (the build's wall time, timed end to end)")
        snapshot(Path(a.figures), Path(a.out or SNAPSHOT), wall_time_s=a.wall_time_s, command=a.command,
                 config=Path(a.config), results=Path(a.results), started=a.started, start_s=job_start_seconds(),
                 extra={"perturb_theta0": a.perturb_theta0,
                        **({"runs_built_at": a.build_commit} if a.build_commit else {})})
        return 0
    if a.what == "calibration":
        calibration(a.trials, Path(a.out or CALIBRATION))
        return 0
    if a.check:
        stale = check_readme(Path(a.readme))
        for name in stale:
            print(f"README block {name!r} differs from its source: run `python -m eosflow results`")
        return 1 if stale else 0
    changed = write_readme(Path(a.readme))
    print("rewrote: " + ", ".join(changed) if changed else "README is up to date")
    return 0
