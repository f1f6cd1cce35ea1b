"""fig4's protocol in general (fig4, fig6, ext/mse_flattening): the run grid, the checks of its
config blocks, the figure with a relative η₀ grid, and a tiny workflow building fig6 and
ext/mse_flattening."""
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from eosflow.config import ConfigError, lr_tag, validate_config
from eosflow.config.flattening import flattening_rows, flattening_title
from eosflow.config.tags import schedule_tag
from eosflow.figures.flattening import make_flattening

ROOT = Path(__file__).resolve().parents[1]
RUNS = "results/runs/{exp}/{setting}/{sched}/lr{lr}/seed{seed}/cube.nc"


def run_path(setting, lr, seed, sched, exp):
    tag = lr if isinstance(lr, str) else lr_tag(lr)
    return RUNS.format(exp=exp, setting=setting, sched=sched, lr=tag, seed=seed)


def old_fig4_runs(config):
    """fig4's grid as common.smk's fig4_runs() built it before the protocol was generalized."""
    c = config["fig4"]
    rows = []
    for seed in c["seeds"]:
        for lr0 in c["lrs"]:
            for e in c["switch_epochs"]:
                if e == 0:
                    path = run_path(c["setting"], c["lr_small"], seed, "const", "fig4")
                else:
                    sched = schedule_tag({"kind": "switch", "epoch": e, "lr_small": c["lr_small"]})
                    path = run_path(c["setting"], lr0, seed, sched, "fig4")
                rows.append({"lr0": lr0, "epoch": e, "seed": seed, "path": path})
    return rows


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_fig4_rows_are_unchanged(raw, seeds):
    """An absolute grid (fig4's until its default became relative) gives the rows it always gave."""
    raw["fig4"].update(seeds=seeds, lrs=[0.14, 0.2, 0.28], lrs_relative=None)
    cfg = validate_config(raw)
    rows = flattening_rows(cfg, "fig4", run_path)
    assert rows == old_fig4_runs(cfg) and len(rows) == 15 * len(seeds)
    assert rows[1]["path"] == "results/runs/fig4/fmnist_mlp/e50to0.01/lr0.14/seed0/cube.nc"


def test_relative_rows_share_the_small_eta_run(raw):
    cfg = validate_config(raw)
    c = cfg["fig6"]
    rows = flattening_rows(cfg, "fig6", run_path)
    n_e, n_lr, n_seed = len(c["switch_epochs"]), len(c["lrs_relative"]), len(c["seeds"])
    assert len(rows) == n_e * n_lr * n_seed
    assert len({r["path"] for r in rows}) == n_seed * (n_lr * (n_e - 1) + 1)
    assert {r["lr0"] for r in rows} == set(c["lrs_relative"])
    r = next(r for r in rows if r["epoch"] == 25 and r["lr0"] == 1.4 and r["seed"] == 2)
    assert r["path"] == "results/runs/fig6/fmnist_cnn/e25to0.01/lrx1.4/seed2/cube.nc"
    r0 = [r["path"] for r in rows if r["epoch"] == 0 and r["seed"] == 1]
    assert set(r0) == {"results/runs/fig6/fmnist_cnn/const/lr0.01/seed1/cube.nc"} and len(r0) == n_lr
    assert flattening_rows(cfg, "mse_flattening", run_path)[0]["path"].startswith(
        "results/runs/mse_flattening/fmnist_mlp_mse/const/lr0.003/")
    with pytest.raises(ValueError, match="unknown flattening block 'eos'"):
        flattening_rows(cfg, "eos", run_path)


def test_titles_name_the_setting(raw):
    cfg = validate_config(raw)
    assert flattening_title(cfg, "fig6").startswith("fig6: progressive flattening, fmnist_cnn (CNN")
    assert "fmnist_mlp_mse" in flattening_title(cfg, "mse_flattening") and "MSE loss" in flattening_title(
        cfg, "mse_flattening")


@pytest.mark.parametrize("block", ["fig4", "fig6", "mse_flattening"])
@pytest.mark.parametrize("mutate, expected", [
    (lambda b: b.update(switch_epochs=[0, 50, 5000]), ["{b}.switch_epochs", "[5000]", "not before the end",
                                                       "{b}.train.max_epochs"]),
    (lambda b: b.update(switch_epochs=[0, 50, 50]), ["{b}.switch_epochs", "repeats"]),
    (lambda b: b.update(lrs=[0.1], lrs_relative=[1.4]), ["{b}", "both lrs and lrs_relative"]),
    (lambda b: b.update(lrs=None, lrs_relative=None), ["{b}", "no learning rates"]),
    (lambda b: b.update(lrs=None, lrs_relative=[1.4, -2]), ["{b}.lrs_relative[1]", "must be > 0"]),
    (lambda b: b.update(setting="nope"), ["{b}.setting", "unknown setting 'nope'"]),
    (lambda b: b["train"].update(max_epoch=10), ["{b}.train", "max_epoch"]),
    (lambda b: b.update(lr_small=0), ["{b}.lr_small", "must be > 0"]),
])
def test_block_errors_name_the_key(raw, block, mutate, expected):
    mutate(raw[block])
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    for word in expected:
        assert word.format(b=block) in str(err.value), (word, str(err.value))


def test_sharpness_every_zero_is_allowed_in_a_block(raw):
    cfg = validate_config(raw)
    assert cfg["fig6"]["train"]["sharpness_every"] == 0 and cfg["mse_flattening"]["train"]["sharpness_every"] == 0
    from eosflow.jobs.spec import run_spec
    spec = run_spec(cfg, "fig6", "fmnist_cnn", "x1.4", 0, "e25to0.01")
    assert spec.train["max_epochs"] == 300 and spec.inloop is None  # no in-loop sharpness
    assert "inloop_sharpness" not in spec.record() and spec.lr.unit == "seed" and dict(spec.lr.limits) == {0: None}


def _cube(hsteps, sharp, lr):
    n = int(hsteps[-1])
    return xr.Dataset({"sharpness": ("hstep", np.asarray(sharp, float)),
                       "test_acc": ("step", np.linspace(0.5, 0.8, n + 1))},
                      coords={"hstep": np.asarray(hsteps), "step": np.arange(n + 1), "lr": lr},
                      attrs={"status": "max_epochs"})


def test_relative_figure_labels_and_claims(tmp_path):
    """η₀ as multiples of η_eos: a flattening grid holds both rank claims at 3 seeds (phase length: blocks
    of 3 switch epochs per (η₀, seed), all -1; η₀: one block of the 3 η₀ per seed, S_max averaged over
    its e > 0, all -1, p = 6^-3); the file names the figure."""
    runs = []
    for seed in (0, 1, 2):
        eta_eos = 0.05 * (1 + seed)
        for ratio in (1.4, 2.0, 2.8):
            for e in (0, 20, 40):
                peak = 100.0 / (1 + e * ratio / 20) * (1 + 0.1 * seed)
                lr = 0.01 if e == 0 else ratio * eta_eos
                runs.append({"lr0": ratio, "epoch": e, "seed": seed,
                             "cube": _cube([0, 20, 40, 60, 80], [5, peak, peak, peak / 2, peak], lr)})
    claims, fig = make_flattening(runs, 0.01, tmp_path / "m.pdf", tmp_path / "m.png", tmp_path / "m.json",
                                  figure="ext/mse_flattening", title="ext/mse_flattening: progressive flattening, x",
                                  relative=True, keep_open=True)
    assert [c.verdict for c in claims] == ["holds", "holds"]
    assert [c.id for c in claims] == ["flattening.phase_length", "flattening.eta0"]
    assert claims[0].family["rule"] == "every" and set(claims[0].family["options"]) == {"1.4", "2", "2.8"}
    assert claims[1].values == [-1.0] * 3 and claims[1].p_holds == pytest.approx(1 / 216)
    # with 2 eta0 a seed, 3 seeds cannot decide (smallest p = 2^-3): undetermined, never holds
    two = [r for r in runs if r["lr0"] != 2.0]
    claims2 = make_flattening(two, 0.01, tmp_path / "t.pdf", tmp_path / "t.png", tmp_path / "t.json")
    assert claims2[1].verdict == "undetermined" and claims2[1].values == [-1.0] * 3
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["figure"] == "ext/mse_flattening" and data["eta0_unit"].startswith("eta_eos")
    assert data["runs"][1]["eta0"] == pytest.approx(1.4 * 0.05) and data["runs"][0]["eta0"] == 0.01
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == [r"$\eta_0$ = 1.4 $\eta_{eos}$",
                                                                       r"$\eta_0$ = 2 $\eta_{eos}$",
                                                                       r"$\eta_0$ = 2.8 $\eta_{eos}$"]
    assert fig._suptitle.get_text() == "ext/mse_flattening: progressive flattening, x"


def test_eta0_claim_is_calibrated_when_a_seed_shares_its_trajectories():
    """The runs (eta0, e) and (eta0, e') of a seed share their first min(e, e') epochs, so whatever is
    peculiar to one eta0's run shows in every e. Null: S_max = u[seed, eta0] + 0.1 noise, no eta0
    effect. One block per seed keeps "S_max falls with eta0" at its level (blocks per (seed, e), as
    before, held 13.8 %); a diverged run (+inf) counts against the claim."""
    from eosflow.claims.procedures import ALPHA
    from eosflow.figures.flattening import flattening_claims

    rng = np.random.default_rng(3)
    trials, held = 600, 0
    for _ in range(trials):
        u = rng.standard_normal((3, 3))
        rows = [{"lr0": lr, "epoch": e, "seed": s, "s_max": u[s, i] + 0.1 * rng.standard_normal(),
                 "status": "max_epochs"}
                for s in range(3) for i, lr in enumerate((1.4, 2.0, 2.8)) for e in (0, 50, 100, 200)]
        held += flattening_claims(rows)[0][1].holds
    assert held / trials <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / trials), held
    # every seed falling with eta0 holds; one diverged run at the largest eta0 turns a seed against it
    rows = [{"lr0": lr, "epoch": e, "seed": s, "s_max": 10.0 / lr + e, "status": "max_epochs"}
            for s in range(3) for lr in (1.4, 2.0, 2.8) for e in (0, 50, 100)]
    assert flattening_claims(rows)[0][1].holds
    rows[-1].update(s_max=float("inf"), status="diverged")
    c = flattening_claims(rows)[0][1]
    assert c.values[-1] == 0.5 and not c.holds


@pytest.mark.workflow
def test_tiny_run_builds_fig6_and_mse_flattening(tmp_path):
    from test_workflow import check_claims, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path)
    targets = ["figures/fig6.pdf", "figures/ext/mse_flattening.pdf"]
    snakemake(workdir, *targets)
    for fig in ("fig6", "ext/mse_flattening"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / f"figures/{fig}.png").stat().st_size > 10_000
        claims = check_claims(workdir / f"figures/{fig}.claims.json", fig)
        assert len(claims["claims"]) == 2
        assert all(c["verdict"] in ("holds", "fails", "undetermined") for c in claims["claims"])
    for exp, setting in (("fig6", "fmnist_cnn"), ("mse_flattening", "fmnist_mlp_mse")):
        runs = sorted((workdir / f"results/runs/{exp}").rglob("cube.nc"))
        assert len(runs) == 2, runs  # the eta_small run and one switch run
        switched = xr.load_dataset(workdir / f"results/runs/{exp}/{setting}/e10to0.05/lrx2/seed0/cube.nc")
        # eta_0 = 2 x this seed's own eta_eos(theta_0); eta_small after the switch
        assert switched.attrs["lr_relative"] == 2.0 and switched.attrs["lr_unit"] == "seed"
        assert float(switched["lr"]) == pytest.approx(2.0 * switched.attrs["eta_eos_unit"])
        lr_step = switched["lr_step"].values
        assert np.allclose(lr_step[1:10], float(switched["lr"])) and np.allclose(lr_step[11:], 0.05)
    cnn = json.loads(xr.load_dataset(workdir / "results/runs/fig6/fmnist_cnn/const/lr0.05/seed0/cube.nc")
                     .attrs["config"])
    assert cnn["model"]["channels"] == [2] and cnn["model"]["input_pool"] == 4
