"""What the optimizer runs are, from the config alone (no torch: the workflow's parse step and the
plotting environment read it): the checks of the optimizer keys, the optimizers' stability
thresholds, where the runs live and the two figures' grids.

See :mod:`eosflow.training.optimizers` for the update rules and :mod:`eosflow.jobs.optimizers` for
the job that trains a run and measures its spectra; an optimizer's path name is
:func:`eosflow.config.tags.opt_tag`.
"""

from __future__ import annotations

from .experiments import perturbation, unknown_setting
from .schema import ConfigError
from .tags import OPTIMIZERS, lr_tag, opt_tag, parse_opt_tag

__all__ = ["OPTIMIZERS", "ADAPTIVE", "CLIPPED", "OPT_FIGURES", "OPT_KEYS", "optimizer_problems",
           "stability_threshold", "rounded_lr", "sgd_flattening_runs", "clipped_ada_runs", "optimizer_run_config",
           "optimizer_config_problems"]

#: Optimizers with a diagonal preconditioner (their stability is about ``λ_max(P⁻¹H)``).
ADAPTIVE = ("adam", "rmsprop", "clipped_adam", "clipped_rmsprop")
CLIPPED = ("clipped_adam", "clipped_rmsprop")


def optimizer_problems(block: dict, key: str = "train") -> list[str]:
    """What is wrong with the optimizer keys of a ``train`` block (messages name ``key``)."""
    name = block.get("optimizer", "gd")
    out = []
    if name not in OPTIMIZERS:
        return [f"config key {key}.optimizer: {name!r} is not allowed; allowed values: {list(OPTIMIZERS)}"]
    clip, bs = block.get("clip"), block.get("batch_size")
    if name in CLIPPED and clip is None:
        out.append(f"config key {key}.clip: {name} needs the cap c of its denominator (e.g. clip: 1.0); "
                   f"for the unclipped method use optimizer: {name.removeprefix('clipped_')}")
    if name not in CLIPPED and clip is not None:
        out.append(f"config key {key}.clip: {clip!r} applies to {list(CLIPPED)} only; set clip: null or use "
                   f"optimizer: clipped_{name if name in ('adam', 'rmsprop') else 'adam'}")
    if name == "gd" and bs is not None:
        out.append(f"config key {key}.batch_size: gd is full-batch; set batch_size: null, or optimizer: sgd "
                   "for minibatch SGD")
    for b in ("beta1", "beta2"):
        v = block.get(b)
        if v is not None and not 0 <= v < 1:
            out.append(f"config key {key}.{b}: {v!r} must be in [0, 1)")
    if block.get("eps") is not None and not block["eps"] > 0:
        out.append(f"config key {key}.eps: {block['eps']!r} must be > 0")
    if clip is not None and not clip > 0:
        out.append(f"config key {key}.clip: {clip!r} must be > 0")
    if bs is not None and not (isinstance(bs, int) and bs >= 1):
        out.append(f"config key {key}.batch_size: {bs!r} must be an integer >= 1 (or null: full batch)")
    return out


def stability_threshold(name: str, lr: float, beta1: float = 0.9) -> float:
    """The stability limit of ``λ_max(P⁻¹H)`` (of ``S(θ)`` for ``gd``/``sgd``) at learning rate
    ``lr``: ``(2 + 2β₁)/((1 − β₁)η)`` for ``adam``/``clipped_adam``, ``2/η`` otherwise
    (``rmsprop``, ``clipped_rmsprop``: ``β₁ = 0``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {list(OPTIMIZERS)}")
    b1 = beta1 if name in ("adam", "clipped_adam") else 0.0
    return (2.0 + 2.0 * b1) / ((1.0 - b1) * lr)


#: The config blocks whose runs are optimizer runs (and the first path component of their runs).
OPT_FIGURES = ("sgd_flattening", "clipped_ada")
#: The ``train`` keys an optimizer run's tag sets.
OPT_KEYS = ("optimizer", "batch_size", "beta1", "clip")
RUNS_DIR = "results/runs/{fig}/{setting}/{opt}/lr{lr}/seed{seed}"


def rounded_lr(lr: float) -> float:
    """η as its path name says it (six significant digits): the run trains with exactly this."""
    return float(lr_tag(lr))


def _path(fig: str, setting: str, tag: str, lr: float, seed: int, name: str = "cube.nc") -> str:
    return RUNS_DIR.format(fig=fig, setting=setting, opt=tag, lr=lr_tag(lr), seed=seed) + "/" + name


def sgd_flattening_runs(cfg: dict) -> list[dict]:
    """The batch-size sweep: for each batch size ``B`` (``B ≥ n_train``: full-batch GD) a small and a
    large η, ``η(B) = η · min(1, B / scale_batch)`` (linear scaling below ``scale_batch``), each seed."""
    c = cfg["sgd_flattening"]
    n = cfg["settings"][c["setting"]]["n_train"]
    rows = []
    for b in c["batch_sizes"]:
        full = b >= n
        tag = opt_tag("gd") if full else opt_tag("sgd", batch_size=b)
        for kind in ("small", "large"):
            lr = rounded_lr(c[f"lr_{kind}"] * min(1.0, b / c["scale_batch"]))
            for seed in c["seeds"]:
                rows.append({"batch_size": min(int(b), n), "eta": kind, "lr": lr, "seed": int(seed), "opt": tag,
                             "path": _path("sgd_flattening", c["setting"], tag, lr, seed)})
    return rows


def clipped_ada_runs(cfg: dict) -> list[dict]:
    """Adam (β₁ = ``beta1``) and RMSprop (the authors' form: β₁ = 0, bias-corrected), each unclipped
    (``clip`` None) and clipped at every ``clips`` value, each seed, all at ``lr``."""
    c = cfg["clipped_ada"]
    bs = c["batch_size"]
    rows = []
    for arm in c["arms"]:
        b1 = c["beta1"] if arm == "adam" else 0.0
        tags = [(None, opt_tag("adam", bs, b1))]
        tags += [(clip, opt_tag("clipped_adam" if arm == "adam" else "clipped_rmsprop", bs, b1, clip))
                 for clip in c["clips"]]
        for clip, tag in tags:
            for seed in c["seeds"]:
                rows.append({"arm": arm, "clip": clip, "seed": int(seed), "lr": rounded_lr(c["lr"]), "opt": tag,
                             "path": _path("clipped_ada", c["setting"], tag, c["lr"], seed)})
    return rows


def optimizer_run_config(cfg: dict, fig: str, setting: str, tag: str) -> dict:
    """The configuration one optimizer run depends on: ``device``, its setting, the ``train`` block
    with figure ``fig``'s overrides and the optimizer keys of ``tag`` (and ``clipped_ada.beta2``),
    the ``hessian`` block with ``fig``'s overrides."""
    if fig not in OPT_FIGURES:
        raise ConfigError(f"unknown optimizer figure {fig!r}; allowed: {list(OPT_FIGURES)}")
    block = cfg[fig]
    if setting not in cfg["settings"]:
        raise ConfigError(unknown_setting(f"{fig}.setting", setting, cfg))
    train = {**cfg["train"], **block.get("train", {}), **parse_opt_tag(tag)}
    if fig == "clipped_ada":
        train["beta2"] = block["beta2"]
    return {"device": cfg["device"], "settings": {setting: cfg["settings"][setting]}, "train": train,
            "hessian": {**cfg["hessian"], **block.get("hessian", {})}, **perturbation(cfg)}


def optimizer_config_problems(cfg: dict, given: dict | None = None) -> list[str]:
    """Cross-key problems of the optimizer keys (top-level ``train`` and every figure's merged
    ``train``) and of the optimizer figures' blocks; ``given``: the config as the user wrote it
    (a block left to its defaults is checked where its figure is requested)."""
    given = cfg if given is None else given
    problems = optimizer_problems(cfg.get("train", {}), "train")
    for exp in ("fig2", "fig4", "eos", "ablation", "fig6", "mse_flattening"):
        over = cfg.get(exp, {}).get("train", {})
        if any(k in over for k in ("optimizer", "batch_size", "clip", "beta1", "beta2", "eps")):
            problems += optimizer_problems({**cfg["train"], **over}, f"{exp}.train")
    if cfg.get("fig5", {}).get("batched") and cfg["train"].get("optimizer", "gd") != "gd":
        problems.append(f"config key fig5.batched: batched sweeps are full-batch GD only (train.optimizer is "
                        f"{cfg['train']['optimizer']!r}); set fig5.batched: false")
    for fig in OPT_FIGURES:
        block = cfg.get(fig)
        if not block:
            continue
        if fig in given and block["setting"] not in cfg["settings"]:
            problems.append(unknown_setting(f"{fig}.setting", block["setting"], cfg))
        bad = sorted(set(block.get("train", {})) & set(OPT_KEYS + ("beta2",)))
        if bad:
            problems.append(f"config key {fig}.train: {bad} are set by the figure's own keys (its grid); "
                            f"remove them from {fig}.train")
    c = cfg.get("clipped_ada")
    if c and len(set(c["clips"])) != len(c["clips"]):
        problems.append(f"config key clipped_ada.clips: {c['clips']} repeats a value")
    c = cfg.get("sgd_flattening")
    if c and len(set(c["batch_sizes"])) != len(c["batch_sizes"]):
        problems.append(f"config key sgd_flattening.batch_sizes: {c['batch_sizes']} repeats a value")
    if c and c["setting"] in cfg["settings"]:
        n = cfg["settings"][c["setting"]]["n_train"]
        full = [b for b in c["batch_sizes"] if b >= n]
        if len(full) > 1:
            problems.append(f"config key sgd_flattening.batch_sizes: {full} are all full batches (n_train = {n} "
                            f"in settings.{c['setting']}); keep one")
    if c and not c["lr_small"] < c["lr_large"]:
        problems.append(f"config key sgd_flattening.lr_small: {c['lr_small']} must be below lr_large "
                        f"({c['lr_large']})")
    return problems
