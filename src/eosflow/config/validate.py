"""Validating a whole config: the JSON schema (with its defaults filled in), then every cross-key
check (:mod:`~eosflow.config.experiments`, :mod:`~eosflow.config.optimizers`,
:mod:`~eosflow.config.flattening`), with errors that name the key.

Used by the workflow (``workflow/rules/common.smk``) before any job starts, by
``python -m eosflow check-config``, and by the tests.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import dataset_problems
from .experiments import experiment_problems
from .flattening import flattening_problems
from .optimizers import optimizer_config_problems
from .schema import ConfigError, apply_schema, load_schema, read_yaml
from .usercode import drop_default_init, model_loss_problems

__all__ = ["validate_config", "load_config"]


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise :class:`ConfigError`.

    Checks the JSON schema (unknown keys, types, ranges, allowed values) and what a schema
    cannot say: figure grids naming settings that exist, model keys that fit the architecture,
    the optimizers' keys, the progressive-flattening grids.
    """
    schema = schema or load_schema()
    cfg = apply_schema(config, schema)
    problems = (dataset_problems(cfg) + model_loss_problems(cfg, config) + experiment_problems(cfg, config, schema)
                + optimizer_config_problems(cfg, config) + flattening_problems(cfg))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    drop_default_init(cfg, config)
    return cfg


def load_config(path: str | Path) -> dict:
    """Read a YAML file and validate it."""
    return validate_config(read_yaml(path))
