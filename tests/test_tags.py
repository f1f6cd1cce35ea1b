"""Path tags (eosflow.config.tags): every kind reads back what it wrote, and what it writes is what
its wildcard accepts."""
import re

import pytest

from eosflow.config.tags import (
    OPTIMIZERS, WILDCARDS, lr_grid, lr_tag, opt_tag, parse_lr_tag, parse_opt_tag, relative_tag, schedule_from_tag,
    schedule_tag, sweep_lr_tags,
)

LRS = [0.14, 0.01, 1e-4, 3.0, 200.0, 0.0095, 1.5e-7, 6.4]
SCHEDULES = [{"kind": "constant"}, {"kind": "switch", "epoch": 50, "lr_small": 0.01},
             {"kind": "switch", "epoch": 400, "lr_small": 0.003}, {"kind": "switch", "epoch": 1, "lr_small": 2e-5}]
OPTIMIZER_KEYS = [{"optimizer": "gd", "batch_size": None, "clip": None},
                  {"optimizer": "sgd", "batch_size": 50, "clip": None},
                  {"optimizer": "adam", "batch_size": 64, "clip": None, "beta1": 0.9},
                  {"optimizer": "adam", "batch_size": 64, "clip": None, "beta1": 0.0},
                  {"optimizer": "rmsprop", "batch_size": None, "clip": None},
                  {"optimizer": "clipped_adam", "batch_size": 64, "clip": 0.1, "beta1": 0.9},
                  {"optimizer": "clipped_rmsprop", "batch_size": 32, "clip": 10.0}]


def matches(kind, tag):
    return re.fullmatch(WILDCARDS[kind], tag) is not None


@pytest.mark.parametrize("lr", LRS)
def test_learning_rate_tags_read_back(lr):
    assert parse_lr_tag(lr_tag(lr)) == (lr, False) and matches("lr", lr_tag(lr))
    assert parse_lr_tag(relative_tag(lr)) == (lr, True) and matches("lr", relative_tag(lr))
    assert lr_tag(parse_lr_tag(lr_tag(lr))[0]) == lr_tag(lr)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_tags_read_back(schedule):
    tag = schedule_tag(schedule)
    assert schedule_from_tag(tag) == schedule and matches("sched", tag) and schedule_tag(schedule_from_tag(tag)) == tag
    assert schedule_tag(None) == "const"


@pytest.mark.parametrize("keys", OPTIMIZER_KEYS)
def test_optimizer_tags_read_back(keys):
    tag = opt_tag(keys["optimizer"], keys["batch_size"], keys.get("beta1"), keys["clip"])
    assert parse_opt_tag(tag) == keys and matches("opt", tag)
    assert opt_tag(**{k: v for k, v in parse_opt_tag(tag).items()}) == tag


def test_tags_are_written_once_in_g_form():
    """A path never depends on a float's repr: 0.1 + 0.2 and 0.3 are the same run."""
    assert lr_tag(0.1 + 0.2) == lr_tag(0.3) == "0.3" and relative_tag(1.0) == "x1"
    assert schedule_tag({"kind": "switch", "epoch": 5.0, "lr_small": 0.1 + 0.2}) == "e5to0.3"
    assert opt_tag("sgd", batch_size=50) == "sgd_b50" and opt_tag("adam", 64) == "adam_m0.9_b64"
    assert lr_grid({"lrs_relative": [0.5, 1.0], "lrs": None}) == [(0.5, "x0.5"), (1.0, "x1")]
    assert sweep_lr_tags({"lrs": [0.1, 0.02], "lrs_relative": None}) == ["0.1", "0.02"]


def test_wildcards_refuse_what_no_tag_writes():
    assert not matches("lr", "abc") and not matches("lr", "x") and not matches("sched", "cosine")
    assert not matches("opt", "lion") and not matches("opt", "sgd_q5") and not matches("seed", "1a")
    assert all(matches("opt", o) for o in OPTIMIZERS)
    with pytest.raises(ValueError, match="unknown optimizer tag"):
        parse_opt_tag("lion")
    with pytest.raises(ValueError, match="unknown schedule tag"):
        schedule_from_tag("cosine")
