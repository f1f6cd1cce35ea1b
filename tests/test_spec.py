"""RunSpec (eosflow.jobs.spec): built once from the config and the wildcards, its record is the
cube's config attribute, and the record reads back as the same run."""
import dataclasses
import json
from pathlib import Path

import pytest

from eosflow.config import ConfigError, load_config
from eosflow.jobs.spec import LearningRate, RunSpec, optimizer_run_spec, run_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "config/config.yaml")


def roundtrip(spec):
    return RunSpec.from_record(json.loads(json.dumps(spec.record(), sort_keys=True)))


def test_a_run_is_built_from_its_wildcards(cfg):
    spec = run_spec(cfg, "fig2", "fmnist_mlp", "0.14", 0, "e37to0.01")
    assert spec.lr == LearningRate(0.14) and spec.seed == 0 and spec.setting == "fmnist_mlp"
    assert dict(spec.schedule) == {"kind": "switch", "epoch": 37, "lr_small": 0.01}
    assert spec.train["max_epochs"] == 37 + cfg["fig2"]["branch"]["epochs"]  # a branch run's length
    assert spec.model["arch"] == "mlp" and spec.loss == "ce" and spec.data["n_train"] == 1000
    assert spec.hessian is None and "hessian" not in spec.record()  # the hessian job's block, not the train job's
    record = spec.record()
    assert record["lr"] == 0.14 and record["schedule"]["kind"] == "switch" and record["dataset"] == "fashion-mnist"


def test_relative_runs_take_their_groups_unit(cfg):
    sweep = run_spec(cfg, "sweep", "fmnist_cnn", "x1.4", 2)
    assert sweep.lr.multiple == 1.4 and sweep.lr.unit == cfg["fig5"]["lr_unit"] == "seed"
    assert sweep.lr.value is None and dict(sweep.lr.limits) == {2: None}  # placed by the training job
    flat = run_spec(cfg, "fig6", "fmnist_cnn", "x2", 1, "e25to0.01")
    assert flat.lr.unit == "seed" and dict(flat.lr.limits) == {1: None}
    cfg2 = {**cfg, "fig5": {**cfg["fig5"], "lr_unit": "median"}}
    median = run_spec(cfg2, "sweep", "fmnist_mlp", "x0.5", 1)
    assert median.lr.unit == "median" and list(median.lr.limits) == [0, 1, 2]
    with pytest.raises(ConfigError, match="relative learning rates"):
        run_spec(cfg, "eos", "fmnist_mlp", "x0.5", 0)


def test_the_record_reads_back_as_the_same_run(cfg):
    for spec in (run_spec(cfg, "sweep", "fmnist_mlp", "x1.4", 1), run_spec(cfg, "ablation", "fmnist_mlp", "x2", 0),
                 run_spec(cfg, "eos", "fmnist_mlp", "0.2", 2),
                 run_spec(cfg, "fig4", "fmnist_mlp", "x2.8", 0, "e50to0.01").with_hessian(cfg["hessian"]),
                 optimizer_run_spec(cfg, "clipped_ada", "fmnist_mlp", "clipped_adam_c0.1_m0.9_b64", "0.001", 1)):
        assert roundtrip(spec) == spec and roundtrip(spec).record() == spec.record()
    placed = run_spec(cfg, "sweep", "fmnist_mlp", "x1.4", 1).placed({0: 0.12, 1: 0.25, 2: 0.2})
    assert placed.lr.value == 1.4 * 0.25 and placed.lr.eta_eos == 0.25 and dict(placed.lr.limits) == {1: 0.25}
    assert placed.record()["relative"] == {"lr_relative": 1.4, "lr_unit": "seed", "eta_eos_unit": 0.25,
                                           "eta_eos_by_seed": {"1": 0.25}}
    assert roundtrip(placed) == placed and LearningRate.from_record(placed.record()).limit(1) == 0.25
    median = LearningRate.relative(2.0, "median", [0, 1, 2]).place({0: 0.1, 1: 0.4, 2: 0.2})
    assert median.eta_eos == 0.2 and median.value == 0.4


def test_a_spec_is_frozen(cfg):
    spec = run_spec(cfg, "sweep", "fmnist_mlp", "x1", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3
    with pytest.raises(TypeError):
        spec.train["max_epochs"] = 1
    with pytest.raises(TypeError):
        spec.model["arch"] = "cnn"
    assert cfg["train"]["max_epochs"] == spec.train["max_epochs"]


def test_optimizer_runs_carry_their_tag_and_hessian_block(cfg):
    spec = optimizer_run_spec(cfg, "sgd_flattening", "fmnist_mlp", "sgd_b50", "0.0039", 2)
    assert spec.train["optimizer"] == "sgd" and spec.train["batch_size"] == 50 and spec.lr.value == 0.0039
    record = spec.record()
    assert record["figure"] == "sgd_flattening" and record["optimizer_tag"] == "sgd_b50"
    assert record["hessian"]["k"] == cfg["sgd_flattening"]["hessian"]["k"]
