"""The train and hessian jobs on a small synthetic dataset, against dense oracles."""
import json

import pytest

import numpy as np
import torch
import xarray as xr

from eosflow.config import validate_config
from eosflow.files import save_torch
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.jobs.hessian import run_hessian
from eosflow.jobs.spec import LearningRate, RunSpec
from eosflow.jobs.train import run_train


def fake_data(path, n_train, n_test, side, n_classes, seed):
    """A prepared-dataset file of Gaussian images (1 x side x side) with cycling labels."""
    g = torch.Generator().manual_seed(seed)
    data = {"x_train": torch.randn(n_train, 1, side, side, generator=g), "y_train": torch.arange(n_train) % n_classes,
            "x_test": torch.randn(n_test, 1, side, side, generator=g), "y_test": torch.arange(n_test) % n_classes,
            "n_classes": n_classes}
    save_torch(data, path)
    return data


def spec(cfg, lr, seed, schedule=None, setting="s"):
    """The run of ``setting`` under ``cfg`` at η₀ ``lr`` (a number, or a LearningRate)."""
    return RunSpec.from_settings(cfg, setting, lr, seed, schedule)


def small_config(model, loss="ce", **sections):
    return validate_config({"device": "cpu", "settings": {"s": {
        "dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": loss, "model": model}}, **sections})


def test_hessian_rule_cadence_and_values(tmp_path):
    data = fake_data(tmp_path / "d.pt", 48, 12, 3, 3, seed=1)
    cfg = small_config(
        {"arch": "mlp", "widths": [5], "activation": "tanh"}, "mse",
        train={"max_epochs": 50, "snapshot_every": 10, "acc_goal": 1.0, "dtype": "float64", "sharpness_every": 20},
        hessian={"k": 3, "every": 2, "eigvec_every": 2, "tol": 1e-8, "max_iter": 80, "n_samples": 30})
    status = run_train(spec(cfg, 0.3, 0), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", progress=False)
    assert status == "max_epochs"
    run_hessian(cfg, "s", tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", tmp_path / "c.nc", progress=False)
    cube = xr.load_dataset(tmp_path / "c.nc")
    # in-loop sharpness every 20 epochs (NaN between) on the full training set
    inloop = cube["sharpness_inloop"].values
    assert np.isfinite(inloop[[0, 20, 40]]).all() and np.isnan(inloop[1:20]).all()
    # snapshots at 0, 10, ..., 50; every second one measured, the last always
    assert list(cube["hstep"].values) == [0, 20, 40, 50]
    assert list(cube["vstep"].values) == [0, 40, 50]  # every second measurement, and the last (eigvec_ends)
    # oracle: dense Hessian of the loss over the first n_samples examples at the last snapshot
    theta = torch.load(tmp_path / "s.pt")["theta"][-1].double()
    model = build_model(cfg["settings"]["s"]["model"], (1, 3, 3), 3, seed=0).double()
    obj = Objective(model, data["x_train"][:30].double(), data["y_train"][:30], "mse")
    H = torch.func.hessian(lambda t: obj.sum_loss(t, obj.x, obj.y) / obj.n)(theta)
    top = torch.linalg.eigvalsh(H).flip(0)[:3].numpy()
    np.testing.assert_allclose(cube["eigval"].values[-1], top, rtol=1e-6)
    assert cube.attrs["eta_eos"] == 2 / cube["sharpness"].values[0]
    assert cube.attrs["hvp_product"] == "rop"  # an MLP: the R-operator products


def test_same_config_and_seed_give_byte_identical_cubes_and_snapshots(tmp_path):
    fake_data(tmp_path / "d.pt", 40, 10, 3, 2, seed=2)
    cfg = small_config({"arch": "mlp", "widths": [6], "activation": "tanh"},
                       train={"max_epochs": 30, "snapshot_every": 10, "acc_goal": 1.0},
                       hessian={"k": 2, "eigvec_every": 1})
    blobs = []
    for rep in ("a", "b"):
        d = tmp_path / rep
        d.mkdir()
        run_train(spec(cfg, 0.5, 3), tmp_path / "d.pt", d / "m.nc", d / "s.pt", progress=False)
        run_hessian(cfg, "s", tmp_path / "d.pt", d / "m.nc", d / "s.pt", d / "c.nc", progress=False)
        blobs.append(((d / "c.nc").read_bytes(), (d / "s.pt").read_bytes()))
    assert blobs[0][0] == blobs[1][0]
    assert blobs[0][1] == blobs[1][1]  # the snapshot file too (no temporary name inside the archive)
    cube = xr.load_dataset(tmp_path / "a" / "c.nc")
    record = json.loads(cube.attrs["config"])  # what is needed to rerun it
    assert record["seed"] == 3 and record["lr"] == 0.5 and record["model"]["widths"] == [6]
    assert "git" in cube.attrs["source"] and "torch" in cube.attrs["source"]


def test_switch_schedule_is_applied_and_recorded(tmp_path):
    fake_data(tmp_path / "d.pt", 20, 6, 2, 2, seed=3)
    cfg = small_config({"arch": "mlp", "widths": [4]}, train={"max_epochs": 12, "acc_goal": 1.0})
    sched = {"kind": "switch", "epoch": 5, "lr_small": 0.01}
    run_train(spec(cfg, 0.7, 0, sched), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", progress=False)
    m = xr.load_dataset(tmp_path / "m.nc")
    np.testing.assert_allclose(m["lr_step"].values[:12], [0.7] * 5 + [0.01] * 7)
    assert json.loads(m.attrs["config"])["schedule"] == sched


def test_forked_run_equals_a_run_trained_from_scratch(tmp_path):
    """fig2's branch runs fork from the parent's snapshot at the switch epoch: same arrays as
    training the whole switch schedule from step 0, without retraining the large-η phase."""
    fake_data(tmp_path / "d.pt", 40, 10, 3, 2, seed=3)
    cfg = small_config({"arch": "mlp", "widths": [6], "activation": "tanh"},
                       train={"max_epochs": 30, "snapshot_every": 1, "acc_goal": 1.0, "eval_every": 4})
    run_train(spec(cfg, 0.5, 0), tmp_path / "d.pt", tmp_path / "pm.nc", tmp_path / "ps.pt", progress=False)
    sched = {"kind": "switch", "epoch": 13, "lr_small": 0.05}
    run_train(spec(cfg, 0.5, 0, sched), tmp_path / "d.pt", tmp_path / "sm.nc", tmp_path / "ss.pt", progress=False)
    run_train(spec(cfg, 0.5, 0, sched), tmp_path / "d.pt", tmp_path / "fm.nc", tmp_path / "fs.pt", progress=False,
              fork=(tmp_path / "pm.nc", tmp_path / "ps.pt"))
    scratch, forked = xr.load_dataset(tmp_path / "sm.nc"), xr.load_dataset(tmp_path / "fm.nc")
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "lr_step"):
        np.testing.assert_array_equal(forked[name].values, scratch[name].values, err_msg=name)
    assert forked.attrs["status"] == scratch.attrs["status"] == "max_epochs"
    assert forked["lr_step"].values[12] == np.float32(0.5) and forked["lr_step"].values[13] == np.float32(0.05)
    fs, ss = torch.load(tmp_path / "fs.pt"), torch.load(tmp_path / "ss.pt")
    assert fs["steps"].tolist() == list(range(13, 31))  # a fork's snapshots start at the fork
    torch.testing.assert_close(fs["theta"], ss["theta"][13:], rtol=0, atol=0)
    # a parent without a snapshot at the switch epoch is a clear error naming the file
    cfg10 = small_config({"arch": "mlp", "widths": [6], "activation": "tanh"},
                         train={"max_epochs": 30, "snapshot_every": 10, "acc_goal": 1.0})
    run_train(spec(cfg10, 0.5, 0), tmp_path / "d.pt", tmp_path / "qm.nc", tmp_path / "qs.pt", progress=False)
    with pytest.raises(ValueError, match=r"qs.pt have no step 13"):
        run_train(spec(cfg10, 0.5, 0, sched), tmp_path / "d.pt", tmp_path / "x.nc", tmp_path / "x.pt", progress=False,
                  fork=(tmp_path / "qm.nc", tmp_path / "qs.pt"))


def test_relative_grid_places_eta0_by_each_seeds_own_limit(tmp_path):
    """lrs_relative: η₀ = multiple × 2/S(θ₀) of the run's own seed (``seed``) or the median over
    seeds (``median``), with S(θ₀) checked against the dense Hessian; both are recorded, once."""
    from eosflow.data import load_prepared
    from eosflow.jobs.run import build_objective, place_lr
    from eosflow.jobs.train import run_train_group

    fake_data(tmp_path / "d.pt", 40, 10, 3, 3, seed=5)
    cfg = small_config({"arch": "mlp", "widths": [6], "activation": "tanh"},
                       train={"max_epochs": 15, "acc_goal": 1.0, "snapshot_every": 5, "dtype": "float64"})
    data = load_prepared(tmp_path / "d.pt")
    exact = {}
    for seed in (0, 1, 2):
        obj = build_objective(spec(cfg, 0.1, seed), data)
        H = torch.func.hessian(lambda t: sum(obj.sum_loss(t, xc, yc) for xc, yc in obj.chunks()) / obj.n)(obj.flatten())
        exact[seed] = 2.0 / float(torch.linalg.eigvalsh(H)[-1])
    assert len({round(v, 6) for v in exact.values()}) == 3  # the seeds' limits differ
    placed = place_lr(spec(cfg, LearningRate.relative(0.5, "seed", [1]), 1), data).lr
    assert placed.value == pytest.approx(0.5 * exact[1], rel=1e-6)
    assert placed.eta_eos == pytest.approx(exact[1], rel=1e-6)
    placed = place_lr(spec(cfg, LearningRate.relative(2.0, "median", [0, 1, 2]), 1), data).lr
    assert placed.value == pytest.approx(2.0 * float(np.median(list(exact.values()))), rel=1e-6)
    assert set(placed.record()["eta_eos_by_seed"]) == {"0", "1", "2"} and placed.unit == "median"
    # the train job: η₀ from the multiple; the cube records both; a group gives the same
    x14 = spec(cfg, LearningRate.relative(1.4, "seed", [2]), 2)
    status = run_train(x14, tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", progress=False)
    m = xr.load_dataset(tmp_path / "m.nc")
    assert float(m["lr"]) == pytest.approx(1.4 * exact[2], rel=1e-6)
    assert m.attrs["lr_relative"] == 1.4 and m.attrs["lr_unit"] == "seed"
    assert m.attrs["eta_eos_unit"] == pytest.approx(exact[2], rel=1e-6)
    record = json.loads(m.attrs["config"])
    assert record["relative"]["lr_relative"] == 1.4
    # the record is the run's RunSpec: read back, it is the placed run (η₀ is not measured again)
    back = RunSpec.from_record(record)
    assert back.lr.value == float(m["lr"]) and back.lr.limit(2) == m.attrs["eta_eos_unit"]
    assert back.record() == record
    x05 = spec(cfg, LearningRate.relative(0.5, "seed", [0]), 0)
    statuses = run_train_group([x14, x05], tmp_path / "d.pt",
                               [(tmp_path / "g0.nc", tmp_path / "g0.pt"), (tmp_path / "g1.nc", tmp_path / "g1.pt")],
                               progress=False)
    g = xr.load_dataset(tmp_path / "g0.nc")
    assert statuses[0] == status and float(g["lr"]) == float(m["lr"]) and g.attrs["lr_relative"] == 1.4
    np.testing.assert_allclose(g["train_loss"].values, m["train_loss"].values, rtol=1e-12)
    assert float(xr.load_dataset(tmp_path / "g1.nc")["lr"]) == pytest.approx(0.5 * exact[0], rel=1e-6)
