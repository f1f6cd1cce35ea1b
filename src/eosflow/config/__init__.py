"""Configuration, without torch (the workflow's parse step and the plotting environment read it).

- :mod:`~eosflow.config.schema`: YAML files, the JSON schema with its defaults, :class:`ConfigError`;
- :mod:`~eosflow.config.tags`: every path tag (learning rate, relative multiple, schedule,
  optimizer), its parser and its wildcard's regular expression;
- :mod:`~eosflow.config.experiments`: the groups of runs, the blocks a run gets, their checks;
- :mod:`~eosflow.config.optimizers`, :mod:`~eosflow.config.flattening`: the optimizer runs' and the
  progressive-flattening protocol's grids and checks;
- :mod:`~eosflow.config.validate`: :func:`validate_config` runs the schema and every check.
"""

from .experiments import EXPERIMENTS, FLATTENING, run_settings, tracks_sharpness
from .schema import ConfigError, load_schema, read_yaml
from .tags import lr_tag, parse_lr_tag, relative_tag, sweep_lr_tags
from .validate import load_config, validate_config

__all__ = ["ConfigError", "load_schema", "read_yaml", "validate_config", "load_config", "EXPERIMENTS", "FLATTENING",
           "run_settings", "tracks_sharpness", "lr_tag", "relative_tag", "parse_lr_tag", "sweep_lr_tags"]
