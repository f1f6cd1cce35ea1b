"""The workflow end to end: snakemake as a subprocess in a temporary copy, with a tiny config."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CATALOG = [f"figures/fig{n}.pdf" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12)] + [
    f"figures/ext/{e}.pdf" for e in ("mse_flattening", "eos", "sgd_flattening", "clipped_ada", "instability_ablation",
                                     "generalization_map", "spectrum", "layers")]
pytestmark = pytest.mark.workflow


def _write_idx(path, a):
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))


def fake_fashion_mnist(folder, n_train=300, n_test=200):
    """Fashion-MNIST-shaped idx files whose classes are learnable (a bright band per class)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 120, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c + 4:2 * c + 7, :] += 120
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


def copy_workflow(d):
    """A runnable copy of the workflow in ``d`` with fake Fashion-MNIST and ``tiny.yaml``."""
    for name in ("Snakefile", "config", "workflow", "envs", "src", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, d / name)
    fake_fashion_mnist(d / "fmnist")
    cfg = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    cfg["data"] = {"fashion_mnist_dir": str(d / "fmnist"), "download": False}
    (d / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return d


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def snakemake(workdir, *args, check=True, configs=("tiny.yaml",)):
    # --configfile takes several values, so it goes last, after the targets
    out = subprocess.run([*SNAKEMAKE, "--cores", "2", *args, "--configfile", *configs], cwd=workdir,
                         capture_output=True, text=True, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def test_dry_run_lists_every_catalog_target(workdir):
    out = snakemake(workdir, "-n", *CATALOG)
    text = out.stdout + out.stderr
    for target in CATALOG:
        assert target in text, target
    for rule in ("prepare_data", "train", "hessian", "fig5_summary", "fig5", "dln_trajectories", "fig1"):
        assert rule in text, rule


def test_rulegraph_shows_the_stages(workdir):
    out = snakemake(workdir, "figures/fig5.pdf", "--rulegraph", "dot")
    for rule in ("prepare_data", "train", "hessian", "fig5_summary", "fig5"):
        assert f'label = "{rule}"' in out.stdout, rule


NO_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is refused while the workflow is parsed")

    sys.meta_path.insert(0, NoTorch())
""")


def test_the_workflow_parses_without_torch(workdir, tmp_path):
    """Parsing the Snakefile and building every catalog target's DAG (its input functions, each
    run's RunSpec) imports no torch: a dry run passes with torch refused in the snakemake process."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    guard = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert guard.returncode != 0 and "refused" in guard.stderr  # the guard is in force
    out = subprocess.run([*SNAKEMAKE, "--cores", "1", "-n", *CATALOG, "--configfile", "tiny.yaml"], cwd=workdir,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "train" in out.stdout and "hessian" in out.stdout


def test_bad_config_fails_before_any_job(workdir):
    (workdir / "bad.yaml").write_text("fig5:\n  lrs: [0.1, -1]\n")
    out = snakemake(workdir, "-n", "figures/fig5.pdf", check=False, configs=("tiny.yaml", "bad.yaml"))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "fig5.lrs[1]" in text and "must be > 0" in text
    assert "Select jobs" not in text


def test_undescribed_figure_fails_with_message(workdir):
    """Figures 10, 11 and 13 are described nowhere public: asked for, they fail with a message."""
    out = snakemake(workdir, "figures/fig10.pdf", check=False)
    assert out.returncode != 0
    assert "figures/fig10.pdf is not produced" in out.stdout + out.stderr
    assert not (workdir / "figures/fig10.pdf").exists()


def test_tiny_run_builds_fig1_fig5_and_cubes(workdir):
    snakemake(workdir, "figures/fig1.pdf", "figures/fig5.pdf")
    for fig in ("fig1", "fig5"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / f"figures/{fig}.png").stat().st_size > 10_000
        check_claims(workdir / f"figures/{fig}.claims.json", fig)
    cubes = sorted((workdir / "results/runs/sweep").rglob("cube.nc"))
    assert len(cubes) == 3
    statuses = {}
    for p in cubes:
        ds = xr.open_dataset(p)
        for v in ("train_loss", "train_acc", "test_loss", "test_acc", "eigval", "residual", "sharpness"):
            assert v in ds, (p, v)
        assert ds["eigval"].dims == ("hstep", "eig") and ds.sizes["eig"] == 2
        assert ds["eigvec"].dims == ("vstep", "eig", "param")
        hsteps = ds["hstep"].values  # every second measurement's vectors, and the first and the last
        assert list(ds["vstep"].values) == sorted(set(hsteps[::2]) | {hsteps[0], hsteps[-1]})
        norms = np.linalg.norm(ds["eigvec"].values, axis=-1)
        np.testing.assert_allclose(norms, 1.0, rtol=2.5e-4)  # 12-bit BitRound: elements to 2^-12 relative
        assert ds.attrs["Conventions"] == "CF-1.12" and "eosflow" in ds.attrs["source"]
        assert json.loads(ds.attrs["config"])["lr"] == float(ds["lr"])
        statuses[float(ds["lr"])] = ds.attrs["status"]
        if ds.attrs["status"] != "diverged":
            assert (ds["residual"].values <= 1e-3).all()
            np.testing.assert_array_equal(ds["sharpness"].values, ds["eigval"].values[:, 0])
    assert statuses[500.0] == "diverged"  # recorded, not a crash
    assert statuses[0.05] != "diverged"
    # logs and benchmarks per job
    assert list((workdir / "results/logs/train").rglob("*.log"))
    assert list((workdir / "results/benchmarks/hessian").rglob("*.tsv"))
    # nothing left to do
    out = snakemake(workdir, "-n", "figures/fig1.pdf", "figures/fig5.pdf")
    assert "Nothing to be done" in out.stdout + out.stderr
    # the report builds offline, and docutils finds nothing wrong in its captions
    out = snakemake(workdir, "--report", "report.html", "figures/fig1.pdf", "figures/fig5.pdf")
    assert (workdir / "report.html").stat().st_size > 10_000
    for level in ("(WARNING/", "(ERROR/", "(SEVERE/"):
        assert level not in out.stdout + out.stderr, out.stderr[-3000:]


def check_claims(path, figure):
    """A claims JSON against workflow/schemas/claims.schema.yaml, and all_hold and the verdict counts
    consistent."""
    import jsonschema

    schema = yaml.safe_load((ROOT / "workflow/schemas/claims.schema.yaml").read_text())
    data = json.loads(path.read_text())
    jsonschema.validate(data, schema)
    assert data["figure"] == figure
    assert data["all_hold"] == all(c["holds"] for c in data["claims"])
    assert sum(data["verdicts"].values()) == len(data["claims"])
    for c in data["claims"]:
        assert c["value"] is not None or not c["holds"]
    return data


def _job_counts(out) -> dict:
    lines = (out.stdout + out.stderr).splitlines()
    stats = lines[lines.index("Job stats:"):] if "Job stats:" in lines else []
    counts = {}
    for line in stats:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts.setdefault(parts[0], int(parts[1]))
        if parts and parts[0] == "total":
            break
    return counts


def test_fig2_branch_jobs_appear_once_the_baseline_exists(workdir):
    """fig2's branch runs depend on where each seed's baseline spikes are: a Snakemake checkpoint per
    seed. Before the baselines exist the dry run cannot list them; after the checkpoints ran, it does."""
    before = snakemake(workdir, "-n", "figures/fig2.pdf")
    assert _job_counts(before).get("train") == 2  # the baselines of seeds 0 and 1 only
    snakemake(workdir, "results/figures/fig2/seed0/plan.json", "results/figures/fig2/seed1/plan.json")
    plans = [json.loads((workdir / f"results/figures/fig2/seed{s}/plan.json").read_text()) for s in (0, 1)]
    assert plans[0]["chosen"] and plans[0]["branch"]["epochs"], plans[0]
    assert [p["seed"] for p in plans] == [0, 1]
    after = snakemake(workdir, "-n", "figures/fig2.pdf")
    counts = _job_counts(after)
    assert counts.get("train") == sum(len(p["branch"]["epochs"]) for p in plans), after.stdout
    assert counts.get("fig2_vectors") == 2, after.stdout
    for p in plans:
        for e in p["branch"]["epochs"]:
            assert f"results/runs/fig2/fmnist_mlp/e{e}to0.01/lrx55/seed{p['seed']}/cube.nc" in after.stdout


def test_tiny_run_builds_fig2_fig3_fig4_and_eos(workdir):
    targets = ["figures/fig2.pdf", "figures/fig3.pdf", "figures/fig4.pdf", "figures/ext/eos.pdf"]
    snakemake(workdir, *targets)
    for fig in ("fig2", "fig3", "fig4", "ext/eos"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / f"figures/{fig}.png").stat().st_size > 10_000
        claims = check_claims(workdir / f"figures/{fig}.claims.json", fig)
        assert len(claims["claims"]) >= 2
    plan = json.loads((workdir / "results/figures/fig2/seed0/plan.json").read_text())
    # each seed's baseline at fig2.lr_relative x its own limit, placed by its training job
    base = xr.load_dataset(workdir / "results/runs/fig2/fmnist_mlp/const/lrx55/seed0/cube.nc")
    assert float(base["lr"]) == pytest.approx(55 * base.attrs["eta_eos_unit"]) and base.attrs["lr_relative"] == 55
    assert plan["lr"] == float(base["lr"]) and plan["lr_relative"] == 55
    other = xr.load_dataset(workdir / "results/runs/fig2/fmnist_mlp/const/lrx55/seed1/cube.nc")
    assert int(other["seed"]) == 1 and float(other["lr"]) != float(base["lr"])  # its own limit
    # branches fork from the baseline at their switch epoch, with eigenvectors every epoch
    assert "eigvec" not in base and list(base["hstep"].values) == list(range(31))
    for e in plan["branch"]["epochs"]:
        br = xr.load_dataset(workdir / f"results/runs/fig2/fmnist_mlp/e{e}to0.01/lrx55/seed0/cube.nc")
        assert int(br["vstep"][0]) == e and br.sizes["vstep"] == 5 and float(br["lr"]) == float(base["lr"])
        np.testing.assert_array_equal(br["train_loss"].values[:e + 1], base["train_loss"].values[:e + 1])
    vec = xr.load_dataset(workdir / "results/figures/fig2/seed0/vectors.nc")
    assert list(vec["vstep"].values) == plan["vector_steps"]
    # the claims take one value per seed: every seed has a spike count
    f2 = json.loads((workdir / "figures/fig2.claims.json").read_text())
    assert f2["drawn_seed"] == 0 and [s["seed"] for s in f2["seeds"]] == [0, 1]
    assert len(f2["claims"][0]["values"]) == 2 and f2["claims"][0]["evidence"] == {"seeds": 2}
    f3 = json.loads((workdir / "figures/fig3.claims.json").read_text())
    assert f3["drawn_seed"] == 0 and (workdir / "results/figures/fig3/seed0/slices.nc").exists()
    assert sorted([s["seed"] for s in f3["seeds"]] + [int(s) for s in f3["left_out"]]) == [0, 1]
    # fig4: the e = 0 run is shared by every eta0; eos: one cube per eta
    assert len(list((workdir / "results/runs/fig4").rglob("cube.nc"))) == 3
    assert len(list((workdir / "results/runs/eos").rglob("cube.nc"))) == 2
    out = snakemake(workdir, "-n", *targets)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_tiny_run_builds_the_ablation_and_the_map(workdir):
    targets = ["figures/ext/instability_ablation.pdf", "figures/ext/generalization_map.pdf"]
    snakemake(workdir, *targets)
    for fig in ("ext/instability_ablation", "ext/generalization_map"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        claims = check_claims(workdir / f"figures/{fig}.claims.json", fig)
        # one seed: every paired or over-seeds claim is undetermined, never holds
        assert {c["verdict"] for c in claims["claims"]} == {"undetermined"}
    data = json.loads((workdir / "figures/ext/generalization_map.claims.json").read_text())
    assert set(data["cells"]) == {"fmnist_mlp", "fmnist_mlp_mse"} and data["cells"]["fmnist_mlp_mse"]["ablation"] is None
    # the twins: the same eta_0 and theta_0; the clamped one steps at most clamp x 2 / S, and at 2 eta_eos it binds
    plain = xr.open_dataset(workdir / "results/runs/sweep/fmnist_mlp/const/lrx2/seed0/cube.nc")
    twin = xr.open_dataset(workdir / "results/runs/ablation/fmnist_mlp/const/lrx2/seed0/cube.nc")
    assert float(plain["lr"]) == float(twin["lr"])
    s, eta = twin["sharpness_inloop"].values, twin["lr_step"].values
    assert np.isfinite(s).all() and (eta * s <= 2 * 0.95 + 1e-9).all() and (eta < float(twin["lr"])).any()
    assert json.loads(twin.attrs["config"])["train"]["clamp"] == 0.95
    assert (plain["lr_step"].values == float(plain["lr"])).all()


def test_batched_sweep_writes_the_same_runs(workdir, tmp_path):
    """fig5.batched: one train_group job per setting and seed instead of one job per run; the
    cubes agree with one-job-per-run's to float32 rounding, statuses exactly."""
    snakemake(workdir, "figures/fig5.pdf")
    batched = copy_workflow(tmp_path)
    (batched / "batched.yaml").write_text("fig5:\n  batched: true\n")
    out = snakemake(batched, "figures/fig5.pdf", configs=("tiny.yaml", "batched.yaml"))
    counts = _job_counts(out)
    assert counts.get("train_group") == 1 and "train" not in counts, out.stderr[-3000:]
    for lr in ("0.05", "0.5", "500"):
        rel = f"results/runs/sweep/fmnist_mlp/const/lr{lr}/seed0/cube.nc"
        one, grouped = xr.load_dataset(workdir / rel), xr.load_dataset(batched / rel)
        assert one.attrs["status"] == grouped.attrs["status"]
        assert one.attrs["config"] == grouped.attrs["config"]
        for v in ("train_loss", "train_acc", "test_acc", "eigval"):
            np.testing.assert_allclose(grouped[v].values, one[v].values, rtol=2e-3, atol=1e-6, err_msg=(lr, v))


def test_batched_groups_only_fig5s_settings(workdir):
    """fig5.batched groups fig5's settings only: another grid's sweep run of another setting (the
    generalization map's cells) stays one train job, not a group that trains fig5's whole grid."""
    (workdir / "batched.yaml").write_text("fig5: {batched: true}\n")
    configs = ("tiny.yaml", "batched.yaml")
    mine = "results/runs/sweep/fmnist_mlp/const/lr0.5/seed0/metrics.nc"
    other = "results/runs/sweep/fmnist_mlp_mse/const/lr0.5/seed0/metrics.nc"
    assert _job_counts(snakemake(workdir, "-n", mine, "--forcerun", "train_group", configs=configs)) \
        .get("train_group") == 1
    counts = _job_counts(snakemake(workdir, "-n", other, "--forcerun", "train", configs=configs))
    assert counts.get("train") == 1 and "train_group" not in counts, counts


def test_another_k_reruns_hessian_not_training(workdir):
    snakemake(workdir, "figures/fig5.pdf")
    (workdir / "k1.yaml").write_text("hessian:\n  k: 1\n")
    out = snakemake(workdir, "-n", "figures/fig5.pdf", configs=("tiny.yaml", "k1.yaml"))
    counts = _job_counts(out)
    assert counts.get("hessian") == 3 and "train" not in counts, out.stdout


def test_killed_training_job_resumes_with_rerun_incomplete(workdir):
    """SIGTERM to Snakemake mid-training: the job checkpoints and exits, Snakemake marks the
    outputs incomplete; `--rerun-incomplete` resumes from the checkpoint, and the cube equals an
    uninterrupted run's. Meanwhile a second Snakemake in the same directory is refused (lock)."""
    import os
    import signal
    import time

    (workdir / "long.yaml").write_text("train:\n  max_epochs: 6000\n  checkpoint_every: 100\n  acc_goal: 1.0\n"
                                       "settings:\n  fmnist_mlp:\n    model:\n      widths: [128]\n")
    target = "results/runs/sweep/fmnist_mlp/const/lr1e-05/seed0/metrics.nc"
    configs = ("tiny.yaml", "long.yaml")
    ckpt = workdir / "results/runs/sweep/fmnist_mlp/const/lr1e-05/seed0/checkpoint.pt"
    cmd = [*SNAKEMAKE, "--cores", "1", target, "--configfile", *configs]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "training finished before it could be interrupted"
    # a second Snakemake in the same directory meets Snakemake's lock
    second = snakemake(workdir, target, check=False, configs=configs)
    assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C / a cluster's scancel deliver
    proc.communicate(timeout=120)
    assert not (workdir / target).exists()
    assert ckpt.exists()
    out = snakemake(workdir, target, "--rerun-incomplete", configs=configs)
    log = (workdir / "results/logs/train/sweep/fmnist_mlp/const/lr1e-05_seed0.log").read_text()
    assert "resumed from checkpoint" in log, log[-2000:]
    resumed = xr.load_dataset(workdir / target)
    # the same run, uninterrupted
    shutil.rmtree(workdir / "results/runs/sweep/fmnist_mlp/const/lr1e-05")
    snakemake(workdir, target, configs=configs)
    fresh = xr.load_dataset(workdir / target)
    assert resumed.attrs["status"] == fresh.attrs["status"]
    for v in ("train_loss", "train_acc", "test_acc", "grad_norm"):
        np.testing.assert_array_equal(resumed[v].values, fresh[v].values)
    assert out.returncode == 0


def test_no_spike_fig2_draws_and_fig3_says_why(workdir):
    """A fig2 run without a qualifying loss spike: fig2 is still drawn (its claims do not hold and
    say why); fig3 fails with a message naming the keys to change."""
    (workdir / "calm.yaml").write_text("fig2:\n  min_rise: 1000.0\n")
    configs = ("tiny.yaml", "calm.yaml")
    snakemake(workdir, "figures/fig2.pdf", configs=configs)
    claims = check_claims(workdir / "figures/fig2.claims.json", "fig2")
    assert not claims["all_hold"] and "no branch runs" in claims["claims"][2]["note"]
    out = snakemake(workdir, "figures/fig3.pdf", check=False, configs=configs)
    assert out.returncode != 0
    assert "fig3 has nothing to slice" in out.stdout + out.stderr and "fig2.min_rise" in out.stdout + out.stderr


def test_damaged_checkpoint_never_blocks_the_run(workdir):
    run = "results/runs/sweep/fmnist_mlp/const/lr0.07/seed3"
    (workdir / run).mkdir(parents=True, exist_ok=True)
    (workdir / run / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    snakemake(workdir, f"{run}/metrics.nc")
    assert (workdir / run / "checkpoint.pt.bad").exists() and not (workdir / run / "checkpoint.pt").exists()
    log = (workdir / "results/logs/train/sweep/fmnist_mlp/const/lr0.07_seed3.log").read_text()
    assert "cannot be read" in log and "moved aside to" in log


def test_damaged_cube_is_named_without_a_traceback(workdir):
    snakemake(workdir, "figures/fig5.pdf")
    cube = sorted((workdir / "results/runs/sweep").rglob("cube.nc"))[0]
    good = cube.read_bytes()
    cube.write_bytes(good[: len(good) // 2])
    out = snakemake(workdir, "figures/fig5.pdf", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"eosflow: run cube {cube.relative_to(workdir)} cannot be read" in text, text[-3000:]
    assert "delete it and rerun snakemake" in text and "Traceback" not in text
    cube.write_bytes(good)
    snakemake(workdir, "figures/fig5.pdf")


def test_tiny_fig5_with_a_relative_grid(workdir):
    """fig5 with lrs_relative: runs named by their multiple of the stability limit, each training job
    placing eta_0 by its own seed's eta_eos(theta_0); claims with verdicts and evidence counts."""
    grid = {"fig5": {"lrs": None, "lrs_relative": [0.5, 0.7, 1.4, 2.0], "seeds": [0, 1, 2]}}
    (workdir / "relative.yaml").write_text(yaml.safe_dump(grid))
    configs = ("tiny.yaml", "relative.yaml")
    (workdir / "batched.yaml").write_text("fig5: {batched: true}\n")
    out = snakemake(workdir, "-n", "figures/fig5.pdf", configs=configs + ("batched.yaml",))
    assert "train_group" in out.stdout and "lrx1.4" in out.stdout  # the batched path names them the same
    snakemake(workdir, "figures/fig5.pdf", configs=configs)
    cubes = sorted((workdir / "results/runs/sweep/fmnist_mlp/const").glob("lrx*/seed*/cube.nc"))
    assert len(cubes) == 12
    for p in cubes:
        ds = xr.load_dataset(p)
        ratio = float(p.parent.parent.name[3:])
        assert ds.attrs["lr_relative"] == ratio and ds.attrs["lr_unit"] == "seed"
        np.testing.assert_allclose(float(ds["lr"]), ratio * ds.attrs["eta_eos_unit"], rtol=1e-12)
        # the hessian rule's S(theta_0) (to 1e-3) agrees with the unit the job measured (to 1e-6)
        np.testing.assert_allclose(ds.attrs["eta_eos"], ds.attrs["eta_eos_unit"], rtol=2e-3)
    doc = check_claims(workdir / "figures/fig5.claims.json", "fig5")
    for c in doc["claims"]:
        assert c["verdict"] in ("holds", "fails", "undetermined") and c["minimum"] == {"seeds": 3}
        assert set(c["evidence"]) == {"seeds"}
