"""Configuration: schema validation with defaults, cross-key checks, and errors that name the key.

Used by the workflow (``workflow/rules/common.smk``) before any job starts, and by the tests.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

# Groups of runs, each with its own train/hessian overrides and its own results/runs/<group>/ tree:
# ``sweep`` (fig5's grid, the top-level train/hessian blocks), and the figure experiments.
EXPERIMENTS = ("sweep", "fig2", "fig4", "eos", "ablation", "fig6", "mse_flattening", "fig9", "fig12")
# The blocks of the progressive-flattening protocol (eosflow.flattening): the same keys each.
FLATTENING = ("fig4", "fig6", "mse_flattening")

MODEL_KEYS = {
    "mlp": {"arch", "widths", "activation", "init"},
    "cnn": {"arch", "channels", "activation", "init", "input_pool"},
    "vgg": {"arch", "blocks", "base_width", "batch_norm", "activation", "init", "dense"},
}


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


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise :class:`ConfigError`.

    Checks the JSON schema (unknown keys, types, ranges, allowed values) and what a schema
    cannot say: figure grids naming settings that exist, model keys that fit the architecture.
    """
    import jsonschema

    schema = schema or load_schema()
    cfg = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_message(e, schema) for e in errors[:10]))
    _fill_defaults(cfg, schema, schema)
    problems = []
    for name, s in cfg["settings"].items():
        arch = s["model"]["arch"]
        extra = sorted(set(s["model"]) - MODEL_KEYS[arch])
        if extra:
            problems.append(f"config key settings.{name}.model: {extra} do not apply to arch {arch!r}; "
                            f"allowed keys: {sorted(MODEL_KEYS[arch])}")
    for fig in ("fig5",):
        for i, sname in enumerate(cfg.get(fig, {}).get("settings", [])):
            if sname not in cfg["settings"]:
                problems.append(f"config key {fig}.settings[{i}]: unknown setting {sname!r}; "
                                f"defined settings: {sorted(cfg['settings'])}")
    for exp in EXPERIMENTS[1:]:
        block = cfg.get(exp, {})
        # a block left to its defaults names fmnist_mlp: checked where the figure is requested
        if exp in config and block.get("setting") not in cfg["settings"]:
            problems.append(f"config key {exp}.setting: unknown setting {block['setting']!r}; "
                            f"defined settings: {sorted(cfg['settings'])}")
        overrides = [("train", block.get("train"), f"{exp}.train"), ("hessian", block.get("hessian"), f"{exp}.hessian")]
        if exp == "fig2":
            overrides.append(("hessian", block.get("branch", {}).get("hessian"), "fig2.branch.hessian"))
        for base, over, key in overrides:
            problems += _override_problems(cfg, schema, base, over or {}, key)
    if cfg.get("fig2", {}).get("train", {}).get("snapshot_every", 1) != 1:
        problems.append("config key fig2.train.snapshot_every: must be 1 (fig2 and fig3 need every epoch's "
                        "parameters for eigenvectors, branch runs and slices)")
    if cfg.get("fig12", {}).get("train", {}).get("snapshot_every", 1) != 1:
        problems.append("config key fig12.train.snapshot_every: must be 1 (fig12's slices start at the "
                        "parameters of the epoch before each snapshot)")
    f12 = cfg.get("fig12", {})
    if f12 and f12["instability"] > f12["instabilities"]:
        problems.append(f"config key fig12.instability: {f12['instability']} is beyond the "
                        f"fig12.instabilities = {f12['instabilities']} largest spikes it is chosen from")
    for key in ("fig2", "fig12"):
        if cfg.get(key):
            problems += _block_lr_problems(cfg[key], key)
    if "fig5" in cfg:
        problems += _grid_problems(cfg["fig5"], "fig5")
    from .optimizer_config import optimizer_config_problems  # the optimizers' keys and figures

    problems += optimizer_config_problems(cfg, config)
    gmap = cfg.get("generalization_map", {}) if "generalization_map" in config else {}
    for key in ("settings", "ablation"):  # left to its defaults it names fmnist_mlp: checked when requested
        for i, sname in enumerate(gmap.get(key, [])):
            if sname not in cfg["settings"]:
                problems.append(f"config key generalization_map.{key}[{i}]: unknown setting {sname!r}; "
                                f"defined settings: {sorted(cfg['settings'])}")
    if "ablation" in cfg and {**cfg["train"], **cfg["ablation"]["train"]}.get("clamp") is None:
        problems.append("config key ablation.train.clamp: the clamped twins need a clamp (e.g. 0.95); "
                        "null would make them plain runs")
    from .flattening import flattening_problems  # fig4, fig6, mse_flattening: grids and switch epochs

    problems += flattening_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def _grid_problems(block: dict, key: str) -> list[str]:
    """An η grid is given exactly once: absolute (``lrs``) or relative (``lrs_relative``)."""
    given = [k for k in ("lrs", "lrs_relative") if block.get(k) is not None]
    if len(given) == 1:
        return []
    if not given:
        return [f"config key {key}: no learning rates; set {key}.lrs (absolute) or {key}.lrs_relative "
                "(multiples of the stability limit eta_eos)"]
    return [f"config key {key}: both lrs and lrs_relative are set (config files merge key by key: "
            f"config/config.yaml sets {key}.lrs_relative); keep one and set the other to null"]


def _block_lr_problems(block: dict, key: str) -> list[str]:
    """A one-η block (fig2, fig12) gives its η exactly once: absolute (``lr``) or as a multiple of
    each seed's stability limit (``lr_relative``)."""
    given = [k for k in ("lr", "lr_relative") if block.get(k) is not None]
    if len(given) == 1:
        return []
    if not given:
        return [f"config key {key}: no learning rate; set {key}.lr (absolute) or {key}.lr_relative "
                "(a multiple of each seed's stability limit eta_eos)"]
    return [f"config key {key}: both lr and lr_relative are set (config files merge key by key: "
            f"config/config.yaml sets {key}.lr_relative); keep one and set the other to null"]


def _override_problems(cfg: dict, schema: dict, base: str, over: dict, key: str) -> list[str]:
    """Check a figure's ``train``/``hessian`` overrides as the merged block they make."""
    import jsonschema

    sub = _subschema(schema["properties"][base], schema)
    unknown = sorted(set(over) - set(sub["properties"]))
    if unknown:
        return [f"config key {key}: unknown keys {unknown}; allowed: {sorted(sub['properties'])}"]
    merged = {**cfg[base], **over}
    errs = jsonschema.Draft202012Validator({**sub, "$defs": schema.get("$defs", {})}).iter_errors(merged)
    return [f"config key {key}.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errs]


def run_settings(cfg: dict, exp: str, setting: str, schedule: dict | None = None) -> dict:
    """The configuration one run's jobs depend on: ``device``, its ``setting``, and the ``train``
    and ``hessian`` blocks with experiment ``exp``'s overrides (``sweep``: the blocks as they are).

    fig2's switch-schedule runs are its branch runs: they train ``fig2.branch.epochs`` past the
    switch and use ``fig2.branch.hessian`` over fig2's Hessian settings.
    """
    if exp not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {exp!r}; allowed: {list(EXPERIMENTS)}")
    train, hessian = dict(cfg["train"]), dict(cfg["hessian"])
    if exp != "sweep":
        block = cfg[exp]
        train.update(block.get("train", {}))
        hessian.update(block.get("hessian", {}))
        if exp == "fig2" and schedule and schedule.get("kind") == "switch":
            train["max_epochs"] = int(schedule["epoch"]) + int(block["branch"]["epochs"])
            hessian.update(block["branch"].get("hessian", {}))
    if setting not in cfg["settings"]:
        raise ConfigError(f"config key {exp}.setting: unknown setting {setting!r}; defined settings: "
                          f"{sorted(cfg['settings'])}")
    return {"device": cfg["device"], "settings": {setting: cfg["settings"][setting]}, "train": train,
            "hessian": hessian, **perturbation(cfg)}


def perturbation(cfg: dict) -> dict:
    """``{"perturb_theta0": delta}`` when the config perturbs θ₀, else ``{}``: an unperturbed run's
    job configuration (its Snakemake params and cube record) stays as it was."""
    return {"perturb_theta0": float(cfg["perturb_theta0"])} if cfg.get("perturb_theta0") else {}


def tracks_sharpness(train: dict) -> bool:
    """Whether a run with this ``train`` block measures S(θ) inside its loop: every
    ``sharpness_every`` epochs, or at every step under a stability ``clamp``."""
    return bool(train["sharpness_every"]) or train.get("clamp") is not None


def train_job_config(cfg: dict, exp: str, setting: str, schedule: dict | None = None) -> dict:
    """The part of :func:`run_settings` a training job depends on: without the ``hessian`` block
    (another ``hessian.k`` must not retrain), except its ``tol`` and ``max_iter`` when the run
    tracks its sharpness in the loop (``train.sharpness_every``, ``train.clamp``)."""
    out = run_settings(cfg, exp, setting, schedule)
    hessian = out.pop("hessian")
    if tracks_sharpness(out["train"]):
        out["hessian"] = {"tol": hessian["tol"], "max_iter": hessian["max_iter"]}
    return out


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


def load_config(path: str | Path) -> dict:
    """Read a YAML file and validate it."""
    return validate_config(read_yaml(path))


def lr_tag(lr) -> str:
    """The canonical string of a learning rate in paths and wildcards: ``f"{float(lr):g}"``."""
    return f"{float(lr):g}"


def relative_tag(ratio) -> str:
    """The path name of an η given as a multiple of the stability limit: ``x{ratio:g}``."""
    return f"x{float(ratio):g}"


def parse_lr_tag(tag: str) -> tuple[float, bool]:
    """``(value, relative)`` of a path's learning rate: ``"0.1"`` → ``(0.1, False)``,
    ``"x0.5"`` (0.5 × η_eos) → ``(0.5, True)``."""
    relative = tag.startswith("x")
    return float(tag[1:] if relative else tag), relative


def sweep_lr_tags(block: dict) -> list[str]:
    """The path names of a sweep's η grid (``lrs`` or ``lrs_relative``) in grid order."""
    if block.get("lrs_relative") is not None:
        return [relative_tag(r) for r in block["lrs_relative"]]
    return [lr_tag(v) for v in block["lrs"]]

