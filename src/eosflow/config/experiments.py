"""The groups of runs (experiments): their names, the blocks a run of each is trained and measured
with, how a relative η grid finds its unit, and the cross-key checks of the settings and the
figure blocks that a schema cannot say.

Each group has its own ``train``/``hessian`` overrides and its own ``results/runs/<group>/`` tree:
``sweep`` (fig5's grid under the top-level blocks), and the figure experiments.
"""

from __future__ import annotations

from .schema import ConfigError, override_problems

__all__ = ["EXPERIMENTS", "FLATTENING", "ONE_ETA", "MODEL_KEYS", "run_settings", "perturbation", "tracks_sharpness",
           "relative_unit", "grid_problems", "one_eta_problems", "unknown_setting", "experiment_problems"]

EXPERIMENTS = ("sweep", "fig2", "fig4", "eos", "ablation", "fig6", "mse_flattening", "fig9", "fig12")
#: The blocks of the progressive-flattening protocol (:mod:`eosflow.config.flattening`): the same keys each.
FLATTENING = ("fig4", "fig6", "mse_flattening")
#: The blocks with one η for every seed, absolute (``lr``) or a multiple of each seed's limit (``lr_relative``).
ONE_ETA = ("fig2", "fig12")

MODEL_KEYS = {
    "mlp": {"arch", "widths", "activation", "init"},
    "cnn": {"arch", "channels", "activation", "init", "input_pool"},
    "vgg": {"arch", "blocks", "base_width", "batch_norm", "activation", "init", "dense"},
}


def unknown_setting(key: str, name, cfg: dict) -> str:
    """The message for config key ``key`` naming a setting that ``cfg`` does not define."""
    return f"config key {key}: unknown setting {name!r}; defined settings: {sorted(cfg['settings'])}"


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
        raise ConfigError(unknown_setting(f"{exp}.setting", setting, cfg))
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


def relative_unit(cfg: dict, exp: str) -> tuple[str, list[int]]:
    """``(unit, seeds)`` of a group's relative η grid (runs named ``lrx0.5``): the progressive-flattening
    blocks and the one-η blocks fig2 and fig12 (``lr_relative``) take each run's own seed's η_eos(θ₀)
    (``seed``); the sweep and the ablation's twins take ``fig5.lr_unit`` over ``fig5.seeds``. Other groups
    have absolute grids only."""
    if exp in FLATTENING or exp in ONE_ETA:
        return "seed", [int(s) for s in cfg[exp]["seeds"]]
    if exp not in ("sweep", "ablation"):
        raise ConfigError(f"relative learning rates (lrx...) are for the sweep, ablation, {list(ONE_ETA)} and "
                          f"{list(FLATTENING)} groups only, not {exp!r}")
    return cfg["fig5"]["lr_unit"], [int(s) for s in cfg["fig5"]["seeds"]]


def _exactly_one(block: dict, key: str, absolute: str, relative: str, what: str, relative_what: str) -> list[str]:
    """``block`` gives ``absolute`` or ``relative`` exactly once (config files merge key by key, so
    setting one in another file leaves config/config.yaml's other in place)."""
    given = [k for k in (absolute, relative) if block.get(k) is not None]
    if len(given) == 1:
        return []
    if not given:
        return [f"config key {key}: no {what}; set {key}.{absolute} (absolute) or {key}.{relative} ({relative_what})"]
    return [f"config key {key}: both {absolute} and {relative} are set (config files merge key by key: "
            f"config/config.yaml sets {key}.{relative}); keep one and set the other to null"]


def one_eta_problems(block: dict, key: str) -> list[str]:
    """A one-η block (fig2, fig12) gives its η exactly once: absolute (``lr``) or as a multiple of
    each seed's stability limit (``lr_relative``)."""
    return _exactly_one(block, key, "lr", "lr_relative", "learning rate",
                        "a multiple of each seed's stability limit eta_eos")


def grid_problems(block: dict, key: str) -> list[str]:
    """An η grid is given exactly once: absolute (``lrs``) or relative (``lrs_relative``)."""
    return _exactly_one(block, key, "lrs", "lrs_relative", "learning rates",
                        "multiples of the stability limit eta_eos")


def experiment_problems(cfg: dict, given: dict, schema: dict) -> list[str]:
    """Cross-key problems of the settings (model keys that fit the architecture) and of the figure
    blocks (settings that exist, ``train``/``hessian`` overrides, snapshot cadences, grids, the
    ablation's clamp). ``cfg``: the config with defaults; ``given``: as the user wrote it (a block
    left to its defaults names ``fmnist_mlp``: it is checked where its figure is requested)."""
    problems = []
    for name, s in cfg["settings"].items():
        arch = s["model"].get("arch")
        if arch is None:  # a user's network: eosflow.config.usercode checks it
            continue
        extra = sorted(set(s["model"]) - MODEL_KEYS[arch])
        if extra:
            problems.append(f"config key settings.{name}.model: {extra} do not apply to arch {arch!r}; "
                            f"allowed keys: {sorted(MODEL_KEYS[arch])}")
    for i, sname in enumerate(cfg.get("fig5", {}).get("settings", [])):
        if sname not in cfg["settings"]:
            problems.append(unknown_setting(f"fig5.settings[{i}]", sname, cfg))
    for exp in EXPERIMENTS[1:]:
        block = cfg.get(exp, {})
        if exp in given and block.get("setting") not in cfg["settings"]:
            problems.append(unknown_setting(f"{exp}.setting", block["setting"], cfg))
        overrides = [("train", block.get("train"), f"{exp}.train"), ("hessian", block.get("hessian"), f"{exp}.hessian")]
        if exp == "fig2":
            overrides.append(("hessian", block.get("branch", {}).get("hessian"), "fig2.branch.hessian"))
        for base, over, key in overrides:
            problems += override_problems(cfg, schema, base, over or {}, key)
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
    for key in ONE_ETA:
        if cfg.get(key):
            problems += one_eta_problems(cfg[key], key)
    if "fig5" in cfg:
        problems += grid_problems(cfg["fig5"], "fig5")
    gmap = cfg.get("generalization_map", {}) if "generalization_map" in given else {}
    for key in ("settings", "ablation"):
        for i, sname in enumerate(gmap.get(key, [])):
            if sname not in cfg["settings"]:
                problems.append(unknown_setting(f"generalization_map.{key}[{i}]", sname, cfg))
    if "ablation" in cfg and {**cfg["train"], **cfg["ablation"]["train"]}.get("clamp") is None:
        problems.append("config key ablation.train.clamp: the clamped twins need a clamp (e.g. 0.95); "
                        "null would make them plain runs")
    return problems
