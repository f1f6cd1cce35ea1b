"""Configuration files and the JSON schema: reading a YAML file, validating it against the schema with
the schema's defaults filled in, and :class:`ConfigError`, whose messages name the key.

The checks a schema cannot say (keys that depend on other keys) are in :mod:`eosflow.config.experiments`,
:mod:`eosflow.config.optimizers` and :mod:`eosflow.config.flattening`; :func:`eosflow.config.validate_config`
runs them all.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

__all__ = ["ConfigError", "load_schema", "apply_schema", "override_problems", "read_yaml"]


class ConfigError(ValueError):
    """A configuration problem; the message names the key, what is wrong and how to fix it."""


def load_schema(path: str | Path | None = None, name: str = "config") -> dict:
    """A JSON schema (as YAML): the file ``path``, or the one the package ships,
    ``eosflow/schemas/{name}.schema.yaml`` (``config`` or ``claims``)."""
    if path is not None:
        return yaml.safe_load(Path(path).read_text())
    return yaml.safe_load(resources.files("eosflow").joinpath("schemas", f"{name}.schema.yaml").read_text())


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _subschema(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _fill_defaults(instance, schema: dict, root: dict):
    """Insert ``default:`` values of the schema where keys are absent (recursively)."""
    schema = _subschema(schema, root)
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        sub_r = _subschema(sub, root)
        if name not in instance and "default" in sub_r:
            instance[name] = copy.deepcopy(sub_r["default"])
        if name in instance:
            _fill_defaults(instance[name], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _message(err, root: dict) -> str:
    key = _key(err.absolute_path)
    sub = _subschema(err.schema, root) if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        bad = sorted(set(err.instance) - set(allowed))
        return (f"config key {key}: unknown key(s) {bad}; allowed keys: {allowed}. "
                "Check the spelling against config/config.yaml.")
    if err.validator == "enum":
        return f"config key {key}: {err.instance!r} is not allowed; allowed values: {err.validator_value}"
    if err.validator in ("exclusiveMinimum", "minimum"):
        what = "> " if err.validator == "exclusiveMinimum" else ">= "
        return f"config key {key}: {err.instance!r} must be {what}{err.validator_value}"
    if err.validator == "minItems":
        return f"config key {key}: needs at least {err.validator_value} item(s), got {len(err.instance)} (an empty grid?)"
    if err.validator == "type":
        return f"config key {key}: {err.instance!r} has the wrong type; expected {err.validator_value}"
    if err.validator == "required":
        return f"config key {key}: {err.message}"
    return f"config key {key}: {err.message}"


def apply_schema(config: dict, schema: dict) -> dict:
    """A validated copy of ``config`` with the schema's defaults filled in; raise :class:`ConfigError`
    listing the first problems (unknown keys, types, ranges, allowed values), each naming its key."""
    cfg = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_message(e, schema) for e in errors[:10]))
    _fill_defaults(cfg, schema, schema)
    return cfg


def override_problems(cfg: dict, schema: dict, base: str, over: dict, key: str) -> list[str]:
    """Check a figure's ``train``/``hessian`` overrides as the merged block they make."""
    sub = _subschema(schema["properties"][base], schema)
    unknown = sorted(set(over) - set(sub["properties"]))
    if unknown:
        return [f"config key {key}: unknown keys {unknown}; allowed: {sorted(sub['properties'])}"]
    merged = {**cfg[base], **over}
    errs = jsonschema.Draft202012Validator({**sub, "$defs": schema.get("$defs", {})}).iter_errors(merged)
    return [f"config key {key}.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errs]


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file; a missing file, malformed YAML (with line and column) or
    a non-mapping gives a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:  # an empty file overrides nothing
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return raw
