"""The workflow through `--executor slurm` on a real single-node SLURM started on this machine.

`../shared/tools/slurm-local-start` (root; Debian's slurm-wlm) starts munge, slurmctld and
slurmd: one partition `gpu`, one node with one fake GPU (gres), no accounting daemon. The tiny
configuration runs there with `profiles/slurm-test` (train asks for `gpu: 1`, hessian for
`gres: "gpu:1"`, the config keeps `device: cpu`) and, at the same time, locally in another copy.
The checks read SLURM's own records (`scontrol show job`, polled during the run because
finished jobs are forgotten after MinJobAge) and the SLURM logs the plugin keeps:

- every job of the DAG was submitted by sbatch, ran on the node and completed with exit 0;
- train jobs carried `--gpus=1`, hessian jobs `--gres=gpu:1`, each was given the node's GPU,
  and no two of them ever held it at once (one GPU);
- the run cubes (every variable) and the claims equal the local run's.

Skipped only when not root or when SLURM cannot start (`EOSFLOW_REQUIRE_SLURM=1` turns that
skip into a failure). The cluster is stopped afterwards if this test started it.
"""
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
import yaml

try:  # tests/ is on sys.path under pytest's default import mode
    from test_workflow import copy_workflow
except ImportError:  # pragma: no cover - other import modes, run from the repository root
    from tests.test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT.parent / "shared" / "tools"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TARGET = "figures/fig5.pdf"
PROFILE = "profiles/slurm-test"
RUN_TIMEOUT = 600  # seconds; the tiny workflow takes about 2 minutes through SLURM here
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)
pytestmark = pytest.mark.workflow


def _sh(*cmd, timeout=30):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _unavailable(reason):
    if os.environ.get("EOSFLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (EOSFLOW_REQUIRE_SLURM=1) but unavailable: {reason}")
    pytest.skip(f"local SLURM unavailable: {reason}")


def _gpu_node():
    """The node of partition `gpu` when it is up and advertises a GPU, else None."""
    try:
        out = _sh("sinfo", "-h", "-p", "gpu", "-o", "%N|%T|%G", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines() if out.returncode == 0 else ():
        node, state, gres = line.strip().split("|")
        if re.fullmatch(r"(idle|mixed|allocated|completing)", state) and "gpu" in gres:
            return node
    return None


def _pids(*names):
    """pids from the pid files slurm-local-start's daemons write (to wait for them after stop)."""
    pids = []
    for f in names:
        try:
            pids.append(int(Path(f).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="module")
def slurm_node():
    """Start the local cluster (unless one is up already); stop it afterwards if we started it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a local SLURM (../shared/tools/slurm-local-start)")
    start, stop = TOOLS / "slurm-local-start", TOOLS / "slurm-local-stop"
    node = _gpu_node()
    started = False
    if node is None:
        if not start.exists():
            _unavailable(f"{start} not found")
        try:
            out = _sh("bash", str(start), timeout=900)  # may apt-get install slurm-wlm first
        except subprocess.TimeoutExpired:
            _unavailable(f"{start} did not finish in 900 s")
        started = True
        deadline = time.monotonic() + 30
        while (node := _gpu_node()) is None and time.monotonic() < deadline:
            time.sleep(1)
        if out.returncode != 0 or node is None:
            _stop(stop)
            _unavailable(f"{start} exited {out.returncode}, no usable node in partition gpu:\n"
                         f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    yield node
    if started:
        _stop(stop)


def _stop(stop):
    pids = _pids("/run/slurmd.pid", "/run/slurmctld.pid", "/run/munge/munged.pid")
    if stop.exists():
        _sh("bash", str(stop), timeout=60)
    # the stop script only signals: wait until the daemons are gone, so that a start right
    # after (the next test session) does not see them still running and skip starting them
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)


def _scontrol_jobs():
    """{SLURM job id: one-line `scontrol show job -d -o` record} of every job slurmctld knows."""
    try:
        out = _sh("scontrol", "show", "job", "-d", "-o", timeout=20)
    except subprocess.TimeoutExpired:
        return {}
    jobs = {}
    for line in out.stdout.splitlines():
        m = re.match(r"JobId=(\d+)\s", line)
        if m:
            jobs[m.group(1)] = line
    return jobs


def _field(record, key):
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", record)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def runs(slurm_node, tmp_path_factory):
    """The tiny fig5 workflow through SLURM and, concurrently, locally."""
    local = copy_workflow(tmp_path_factory.mktemp("local"))
    remote = copy_workflow(tmp_path_factory.mktemp("slurm"))
    t0 = time.monotonic()
    with open(local / "snakemake.out", "w") as lout, open(remote / "snakemake.out", "w") as rout:
        lp = subprocess.Popen([*SNAKEMAKE, "--cores", "2", TARGET, "--configfile", "tiny.yaml"],
                              cwd=local, stdout=lout, stderr=subprocess.STDOUT)
        rp = subprocess.Popen([*SNAKEMAKE, "--profile", PROFILE, TARGET, "--configfile", "tiny.yaml"],
                              cwd=remote, stdout=rout, stderr=subprocess.STDOUT)
        records = {}
        try:
            while rp.poll() is None:
                records.update(_scontrol_jobs())
                if time.monotonic() - t0 > RUN_TIMEOUT:
                    rp.terminate()  # Snakemake scancels its jobs on SIGTERM
                    rp.wait(60)
                    break
                time.sleep(1)
            records.update(_scontrol_jobs())
            slurm_s = time.monotonic() - t0
            lp.wait(max(RUN_TIMEOUT - (time.monotonic() - t0), 60))
        finally:
            for p in (lp, rp):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    log = (remote / "snakemake.out").read_text()
    for name, d, p in (("slurm", remote, rp), ("local", local, lp)):
        if p.returncode != 0:
            text = (d / "snakemake.out").read_text()
            raise AssertionError(f"{name} run failed (exit {p.returncode}):\n{text[-6000:]}")
    print(f"\nSLURM run {slurm_s:.0f} s, both runs {time.monotonic() - t0:.0f} s")
    return SimpleNamespace(local=local, remote=remote, log=log, records=records, node=slurm_node)


def _submissions(runs):
    """[(snakemake job id, rule, SLURM job id, SLURM log path)] from Snakemake's log."""
    subs = []
    for jobid, slurm_id, path in SUBMITTED.findall(runs.log):
        rule = re.search(r"/rule_(\w+?)/", path)
        assert rule, path
        subs.append((jobid, rule.group(1), slurm_id, Path(path)))
    return subs


def _job_stats(log):
    """Snakemake's 'Job stats' table: {rule: count} of the jobs it planned."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {w[0]: int(w[1]) for w in (line.split() for line in table.splitlines())
            if len(w) == 2 and w[1].isdigit()}


def test_every_job_went_through_sbatch_and_completed(runs):
    subs = _submissions(runs)
    planned = _job_stats(runs.log)
    submitted = {}
    for _, rule, _, _ in subs:
        submitted[rule] = submitted.get(rule, 0) + 1
    # every job of the DAG went to sbatch, once (nothing ran locally, nothing was retried)
    assert submitted == planned, (submitted, planned)
    cfg = yaml.safe_load((runs.remote / "tiny.yaml").read_text())
    n_runs = len(cfg["fig5"]["lrs"]) * len(cfg["fig5"]["seeds"])
    assert planned["train"] == planned["hessian"] == n_runs
    assert len({s for _, _, s, _ in subs}) == len(subs), "SLURM job ids repeat"
    assert "sbatch failed" not in runs.log
    names = set()
    for jobid, rule, slurm_id, path in subs:
        rec = runs.records.get(slurm_id)
        assert rec, f"SLURM never listed job {slurm_id} ({rule})"
        assert _field(rec, "JobState") == "COMPLETED", rec
        assert _field(rec, "ExitCode") == "0:0", rec
        assert _field(rec, "Partition") == "gpu", rec
        assert _field(rec, "NodeList") == runs.node, rec
        assert _field(rec, "Comment").startswith(f"rule_{rule}"), rec
        assert _field(rec, "WorkDir") == str(runs.remote), rec
        names.add(_field(rec, "JobName"))  # the run's uuid, one per Snakemake invocation
        # the SLURM output file (sbatch --output .../%j.log) of that job, written on the node by
        # the job step: Snakemake ran the rule there with the jobstep executor
        assert path.name == f"{slurm_id}.log" and path.is_file(), path
        assert path.is_relative_to(runs.remote / ".snakemake/slurm_logs"), path
        text = path.read_text()
        assert "--executor slurm-jobstep" in text, text[-2000:]
        assert f"rule {rule}:" in text and "Finished jobid" in text, text[-2000:]
    assert len(names) == 1, names
    assert "steps (100%) done" in runs.log


def test_gpu_rules_got_the_fake_gpu(runs):
    node = _sh("scontrol", "show", "node", runs.node).stdout
    assert re.search(r"\bGres=gpu:1\b", node), node
    gpu_jobs = []
    for _, rule, slurm_id, _ in _submissions(runs):
        rec = runs.records[slurm_id]
        per_job, per_node = _field(rec, "TresPerJob") or "", _field(rec, "TresPerNode") or ""
        granted = _field(rec, "JOB_GRES") or ""
        if rule == "train":  # profile: gpu: 1 -> sbatch --gpus=1
            assert re.search(r"gpu:1$", per_job) and "gpu" not in per_node, rec
        elif rule == "hessian":  # profile: gres: "gpu:1" -> sbatch --gres=gpu:1
            assert re.search(r"gpu:1$", per_node) and "gpu" not in per_job, rec
        else:
            assert "gpu" not in per_job + per_node + granted, rec
            continue
        assert granted == "gpu:1", rec  # SLURM allocated the node's GPU to the job
        start, end = (datetime.fromisoformat(_field(rec, k)) for k in ("StartTime", "EndTime"))
        gpu_jobs.append((start, end, slurm_id))
    # one GPU on the node: SLURM ran the GPU jobs one after another, never two at once
    gpu_jobs.sort()
    for (_, end, a), (start, _, b) in zip(gpu_jobs, gpu_jobs[1:]):
        assert start >= end, f"GPU jobs {a} and {b} overlap"
    # and the jobs' own resources say so (printed by the jobstep Snakemake inside SLURM)
    for _, rule, _, path in _submissions(runs):
        text = path.read_text()
        if rule == "train":
            assert "gpu=1" in text, text[-2000:]
        elif rule == "hessian":
            assert "gres=gpu:1" in text, text[-2000:]


def test_results_equal_a_local_run(runs):
    cubes = sorted((runs.local / "results/runs").rglob("cube.nc"))
    assert cubes
    assert len(cubes) == len(list((runs.remote / "results/runs").rglob("cube.nc")))
    for p in cubes:
        rel = p.relative_to(runs.local)
        with xr.open_dataset(p) as a, xr.open_dataset(runs.remote / rel) as b:
            assert set(a.data_vars) == set(b.data_vars), rel
            assert {"train_loss", "eigval"} <= set(a.data_vars), rel
            for v in a.data_vars:
                np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{rel}: {v}")
            for k in ("status", "config", "eta_eos"):
                assert a.attrs[k] == b.attrs[k], (rel, k)
    a = json.loads((runs.local / "figures/fig5.claims.json").read_text())
    b = json.loads((runs.remote / "figures/fig5.claims.json").read_text())
    assert a == b
    assert (runs.remote / "figures/fig5.pdf").read_bytes()[:4] == b"%PDF"


def test_scancelled_training_resumes_with_rerun_incomplete(runs):
    """`scancel` of a running train job: SLURM sends SIGTERM, the trainer writes a checkpoint
    and exits; Snakemake marks the outputs incomplete; rerun through SLURM with
    `--rerun-incomplete`, the job resumes from the checkpoint and the metrics equal an
    uninterrupted local run's."""
    long = "train:\n  max_epochs: 6000\n  checkpoint_every: 100\n  acc_goal: 1.0\n" \
           "settings:\n  fmnist_mlp:\n    model:\n      widths: [128]\n"
    run_dir = "results/runs/sweep/fmnist_mlp/const/lr1e-05/seed0"
    target = f"{run_dir}/metrics.nc"
    for d in (runs.remote, runs.local):
        (d / "long.yaml").write_text(long)
    cmd = [*SNAKEMAKE, "--profile", PROFILE, target, "--configfile", "tiny.yaml", "long.yaml"]
    with open(runs.remote / "scancel.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=runs.remote, stdout=out, stderr=subprocess.STDOUT)
        ckpt = runs.remote / run_dir / "checkpoint.pt"
        deadline = time.monotonic() + RUN_TIMEOUT
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, (runs.remote / "scancel.out").read_text()[-3000:]
        (slurm_id,) = [s for _, s, _ in SUBMITTED.findall((runs.remote / "scancel.out").read_text())]
        assert _sh("scancel", slurm_id).returncode == 0
        assert proc.wait(300) != 0  # the job failed: Snakemake stops and marks it incomplete
    assert not (runs.remote / target).exists() and ckpt.exists()
    again = subprocess.run([*cmd, "--rerun-incomplete"], cwd=runs.remote, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (runs.remote / "results/logs/train/sweep/fmnist_mlp/const/lr1e-05_seed0.log").read_text()
    assert "resumed from checkpoint" in log, log[-3000:]
    local = subprocess.run([*SNAKEMAKE, "--cores", "1", target, "--configfile", "tiny.yaml", "long.yaml"],
                           cwd=runs.local, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert local.returncode == 0, local.stdout[-3000:]
    with xr.open_dataset(runs.remote / target) as a, xr.open_dataset(runs.local / target) as b:
        assert a.attrs["status"] == b.attrs["status"]
        for v in ("train_loss", "train_acc", "test_acc", "grad_norm"):
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
