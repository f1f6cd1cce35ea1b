"""Chaos: build fig5 at a tiny scale while SIGKILLing running jobs at random moments, rerun with
``--rerun-incomplete`` until done, and compare every cube and the claims JSON with a clean build's,
exactly.

Runs alone with ``python -m pytest -m chaos -s``; ``EOSFLOW_CHAOS_KILLS`` sets the number of kills
(default 3, as in CI) and ``EOSFLOW_CHAOS_SEED`` the random moments. It prints kills survived,
reruns, files compared and differences.
"""
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from test_workflow import SNAKEMAKE, copy_workflow, snakemake

pytestmark = [pytest.mark.chaos, pytest.mark.workflow]
KILLS = int(os.environ.get("EOSFLOW_CHAOS_KILLS", "3"))
SEED = int(os.environ.get("EOSFLOW_CHAOS_SEED", "0"))
TARGET = "figures/fig5.pdf"
# longer training than tiny.yaml, with frequent checkpoints: kills land mid-run and runs resume
CHAOS = {"train": {"max_epochs": 3000, "acc_goal": None, "checkpoint_every": 50, "snapshot_every": 500},
         "fig5": {"lrs": [0.05, 0.2, 0.5, 500.0], "seeds": [0, 1]}}


def jobs(parent: int) -> list[int]:
    """PIDs of the job scripts Snakemake (``parent``) is running now."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and "/.snakemake/scripts/" in cmd:
            out.append(int(p.name))
    return out


def chaos_round(workdir: Path, rng: random.Random, budget: int) -> tuple[int, int]:
    """One Snakemake run that loses up to ``budget`` jobs to SIGKILL at random moments.
    Returns (kills, Snakemake's exit status)."""
    proc = subprocess.Popen([*SNAKEMAKE, "--cores", "2", "--keep-going", "--rerun-incomplete", TARGET,
                             "--configfile", "tiny.yaml", "chaos.yaml"], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kills, deadline = 0, time.time() + 600
    while proc.poll() is None and kills < budget and time.time() < deadline:
        running = jobs(proc.pid)
        if not running:
            time.sleep(0.05)
            continue
        time.sleep(rng.uniform(0.0, 2.0))  # a random moment of the job's life: start-up, training, writing
        alive = [pid for pid in jobs(proc.pid) if pid in running]
        if alive:
            try:
                os.kill(rng.choice(alive), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    return kills, proc.wait(timeout=600)


def same_dataset(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """The names of the variables, coordinates or attributes in which ``a`` and ``b`` differ."""
    diff = [] if a.attrs == b.attrs else ["attrs"]
    if set(a.variables) != set(b.variables):
        return diff + ["variables"]
    for name in a.variables:
        x, y = a[name].values, b[name].values
        if x.shape != y.shape or a[name].attrs != b[name].attrs:
            diff.append(name)
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            diff.append(name)
    return diff


def test_kills_at_random_moments_change_nothing(tmp_path):
    clean, chaos = tmp_path / "clean", tmp_path / "chaos"
    for d in (clean, chaos):
        d.mkdir()
        copy_workflow(d)
        (d / "chaos.yaml").write_text(yaml.safe_dump(CHAOS))
    snakemake(clean, TARGET, configs=("tiny.yaml", "chaos.yaml"))
    rng = random.Random(SEED)
    kills = reruns = 0
    while kills < KILLS and reruns < 4 * KILLS:
        k, _ = chaos_round(chaos, rng, budget=min(3, KILLS - kills))
        kills, reruns = kills + k, reruns + 1
    failures = []
    while not (chaos / TARGET).exists() and reruns < 6 * KILLS:  # the last reruns, undisturbed
        out = subprocess.run([*SNAKEMAKE, "--cores", "2", "--rerun-incomplete", TARGET, "--configfile", "tiny.yaml",
                              "chaos.yaml"], cwd=chaos, capture_output=True, text=True, timeout=900)
        reruns += 1
        if out.returncode:
            failures.append(out.stderr[-2000:])
    print("\n".join(failures))
    assert kills >= KILLS, f"only {kills} kills in {reruns} reruns"
    out = snakemake(chaos, "-n", TARGET, configs=("tiny.yaml", "chaos.yaml"))
    assert "Nothing to be done" in out.stdout + out.stderr
    files = sorted(p.relative_to(clean) for p in (clean / "results").rglob("*.nc"))
    assert len(files) >= 2 * len(CHAOS["fig5"]["lrs"]) * len(CHAOS["fig5"]["seeds"])
    differences = {str(f): d for f in files if (d := same_dataset(xr.load_dataset(clean / f),
                                                                  xr.load_dataset(chaos / f)))}
    claims = [json.loads((d / "figures/fig5.claims.json").read_text()) for d in (clean, chaos)]
    if claims[0] != claims[1]:
        differences["figures/fig5.claims.json"] = ["claims"]
    leftovers = [p.name for p in (chaos / "results").rglob(".*") if p.is_file()]  # temporary files
    print(f"\nchaos: {kills} kills survived, {reruns} reruns, {len(files) + 1} files compared "
          f"({len(files)} NetCDF + claims JSON), {len(differences)} differences, "
          f"{len(leftovers)} temporary files left")
    assert not differences, differences
    assert not leftovers, leftovers
