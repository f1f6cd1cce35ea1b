"""The statistics and claims of ext/sgd_flattening and ext/clipped_ada on synthetic run cubes (issue 12),
and the optimizer runs' path names."""
import json

import numpy as np
import pytest
import xarray as xr

from eosflow.config import ConfigError, load_config
from eosflow.figures.clipped_ada import loss_spikes, make_clipped_ada
from eosflow.figures.sgd_flattening import make_sgd_flattening
from eosflow.config.optimizers import clipped_ada_runs, optimizer_run_config, sgd_flattening_runs
from eosflow.config.tags import opt_tag, parse_opt_tag


def cube(sharp, loss=None, acc=0.8, status="max_epochs", precond=None, threshold=10.0, optimizer="sgd"):
    loss = np.linspace(1.0, 0.1, 21) if loss is None else np.asarray(loss, float)
    n = loss.size - 1
    h = np.linspace(0, n, len(sharp)).astype(int)
    pre = np.full(len(sharp), np.nan) if precond is None else np.asarray(precond, float)
    return xr.Dataset({"sharpness": ("hstep", np.asarray(sharp, float)), "precond_sharpness": ("hstep", pre),
                       "train_loss": ("step", loss), "test_acc": ("step", np.full(n + 1, acc))},
                      coords={"hstep": h, "step": np.arange(n + 1)},
                      attrs={"status": status, "stability_threshold": threshold, "optimizer": optimizer})


def sgd_runs(effect: bool, seeds=(0, 1, 2)):
    rows, cubes = [], []
    for b in (1000, 100, 10):
        for eta in ("small", "large"):
            for s in seeds:
                if effect:  # the large eta is flatter everywhere, and flatter than small batches
                    final = 10.0 + s if eta == "large" else 80.0 - 0.5 * (1000 / b) + s
                else:  # the large eta ends sharper at B = 10
                    final = (10.0 + s if b > 10 else 90.0 + s) if eta == "large" else 50.0 + s
                rows.append({"batch_size": b, "eta": eta, "lr": 0.1, "seed": s})
                cubes.append(cube([5.0, 20.0, final]))
    return rows, cubes


@pytest.mark.parametrize("effect", [True, False])
def test_sgd_flattening_claims(tmp_path, effect):
    rows, cubes = sgd_runs(effect)
    claims = make_sgd_flattening(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    if effect:
        assert [c.verdict for c in claims] == ["holds", "holds"]
        assert "least flat is 10;" in claims[0].note  # S_small 30 at B = 10: the largest ratio
    else:
        assert [c.verdict for c in claims] == ["fails", "holds"]
        assert "batch size 10 fails" in claims[0].note and claims[0].value > 1
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["runs"]) == 18 and set(data["per_batch_size"]) == {"1000", "100", "10"}


def test_sgd_flattening_one_seed_and_divergence(tmp_path):
    rows, cubes = sgd_runs(True, seeds=(0,))
    cubes[1] = cube([5.0, 1e9, np.nan], status="diverged")  # B=1000, large eta, seed 0
    claims = make_sgd_flattening(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert [c.verdict for c in claims] == ["undetermined"] * 2
    assert claims[1].value is None and claims[1].evidence == {"seeds": 0}  # a diverged run is not "flat"


def ada_runs(clipped_better: bool, crossing: bool, seeds=(0, 1, 2)):
    rows, cubes = [], []
    for clip in (None, 0.1, 1.0):
        for s in seeds:
            acc = 0.78 + 0.002 * s + (0.02 if clipped_better and clip == 0.1 else 0.0)
            ratio = (2.0 if clip is not None else 0.5) if crossing else 0.5
            loss = np.ones(21)
            if clip is not None:
                loss[5], loss[12] = 5.0, 4.0  # two spikes of the clipped runs
            rows.append({"arm": "adam", "clip": clip, "seed": s, "lr": 0.005})
            cubes.append(cube([5, 6, 7], loss=loss, acc=acc, precond=[np.nan, 3.0, ratio * 100 + s],
                              threshold=100.0, optimizer="adam" if clip is None else "clipped_adam"))
    return rows, cubes


@pytest.mark.parametrize("better, crossing, verdicts", [(True, True, ["holds", "holds"]),
                                                        (False, False, ["fails", "fails"])])
def test_clipped_ada_claims(tmp_path, better, crossing, verdicts):
    rows, cubes = ada_runs(better, crossing)
    claims = make_clipped_ada(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert [c.verdict for c in claims] == verdicts
    if better:
        assert claims[0].value == pytest.approx(0.02) and "deciding c (0.1)" in claims[0].statistic
    else:  # no difference at all: every c's interval is [0, 0], not above 0
        assert claims[0].value == pytest.approx(0.0) and claims[0].interval == [0.0, 0.0]
    data = json.loads((tmp_path / "c.json").read_text())
    assert [r["spikes"] for r in data["runs"][:4]] == [0, 0, 0, 2]


def test_loss_spikes_and_divergence_at_chance(tmp_path):
    assert loss_spikes(cube([1.0], loss=[1, 3, 1, 1, 2.5, 0.5]), 1.0) == 2
    assert loss_spikes(cube([1.0], loss=[1, 1.5, 1, 1, 1.8, 0.5]), 1.0) == 0  # rises under 100 %
    rows, cubes = ada_runs(True, True)
    cubes[3] = cube([5, np.nan, np.nan], status="diverged", acc=0.9, precond=[np.nan] * 3, threshold=100.0)
    make_clipped_ada(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    run = json.loads((tmp_path / "c.json").read_text())["runs"][3]
    assert run["final_test_acc"] == 0.1 and run["ratio_final"] is None  # chance; NaN written as null


def test_opt_tags_round_trip():
    for args in [("gd",), ("sgd", 50), ("adam", 64, 0.9), ("adam", 64, 0.0), ("clipped_adam", 64, 0.9, 0.1),
                 ("clipped_rmsprop", None, None, 10.0), ("rmsprop", 8)]:
        tag = opt_tag(*args)
        back = parse_opt_tag(tag)
        assert opt_tag(back["optimizer"], back["batch_size"], back.get("beta1"), back["clip"]) == tag
    assert opt_tag("clipped_adam", 64, 0.9, 0.1) == "clipped_adam_c0.1_m0.9_b64"
    with pytest.raises(ValueError, match="unknown optimizer tag"):
        parse_opt_tag("lion_b4")


def test_default_grids_and_run_config():
    cfg = load_config("config/config.yaml")
    sgd = sgd_flattening_runs(cfg)
    assert len(sgd) == 3 * 2 * 3 and {r["opt"] for r in sgd} == {"gd", "sgd_b200", "sgd_b50"}
    assert {r["lr"] for r in sgd if r["batch_size"] == 50} == {0.00195312, 0.0195312}  # 0.02 and 0.2 x 50/512
    ada = clipped_ada_runs(cfg)
    assert len(ada) == 2 * 4 * 3 and {r["opt"] for r in ada if r["arm"] == "rmsprop"} == {
        "adam_m0_b64", "clipped_rmsprop_c0.1_b64", "clipped_rmsprop_c1_b64", "clipped_rmsprop_c10_b64"}
    run = optimizer_run_config(cfg, "clipped_ada", "fmnist_mlp", "clipped_adam_c0.1_m0.9_b64")
    assert {k: run["train"][k] for k in ("optimizer", "clip", "batch_size", "beta1", "beta2", "acc_goal")} == {
        "optimizer": "clipped_adam", "clip": 0.1, "batch_size": 64, "beta1": 0.9, "beta2": 0.99, "acc_goal": 0.999}
    with pytest.raises(ConfigError, match="unknown setting"):
        optimizer_run_config(cfg, "clipped_ada", "nope", "gd")


def test_figure_blocks_are_checked_before_any_job():
    from eosflow.config import read_yaml, validate_config
    base = read_yaml("config/config.yaml")
    for block, bad, msg in [("sgd_flattening", {"batch_sizes": [1000, 2000, 50]}, "are all full batches"),
                            ("sgd_flattening", {"lr_small": 0.3}, "must be below lr_large"),
                            ("clipped_ada", {"clips": [0.1, 0.1]}, "repeats a value"),
                            ("clipped_ada", {"setting": "nope"}, "clipped_ada.setting: unknown setting")]:
        with pytest.raises(ConfigError, match=msg):
            validate_config({**base, block: {**base[block], **bad}})
