# Configuration validation, wildcard constraints and every input function.
import json
import os
import sys
from pathlib import Path

_SRC = str(Path(workflow.basedir) / "src")
# Use this checkout's package, here and in every job (scripts, conda envs and cluster jobs inherit
# PYTHONPATH). Only prepended to: nothing is required of the user's environment.
sys.path.insert(0, _SRC)
_env = os.environ
_env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, _env.get("PYTHONPATH", "")) if p)

from snakemake.exceptions import WorkflowError  # noqa: E402
from eosflow.device import HEAP_ENV  # noqa: E402

# glibc heap settings under which jobs reuse freed tensor memory (eosflow.device.HEAP_ENV: the
# Hessian jobs of convolutional nets run up to 1.7x faster); a user's own values win
for _k, _v in HEAP_ENV.items():
    _env.setdefault(_k, _v)
from eosflow.config import (  # noqa: E402
    ConfigError, EXPERIMENTS, load_schema, lr_tag, parse_lr_tag, relative_tag, run_settings, sweep_lr_tags,
    train_job_config, validate_config,
)
from eosflow.training.schedules import schedule_from_tag, schedule_tag  # noqa: E402
from eosflow.config import FLATTENING  # noqa: E402
from eosflow.flattening import (  # noqa: E402
    flattening_rows, flattening_title as flattening_figure_title, relative_spec as flattening_relative,
)

try:
    _validated = validate_config(config, load_schema())  # the schema the package ships
except ConfigError as _err:
    raise WorkflowError(f"eosflow: {_err}\nFix the key in config/config.yaml (or your --configfile).") from None
config.clear()
config.update(_validated)

IMPLEMENTED = ["fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig12", "ext/eos",
               "ext/mse_flattening", "ext/instability_ablation", "ext/generalization_map"]
# The paper's figures that no public text describes: never produced (they fail with a message).
UNDESCRIBED = ["fig10", "fig11", "fig13"]
# One directory per run: {exp} is its group (sweep: fig5's grid under the top-level train/hessian
# blocks; fig2, fig4, eos: those figures' runs under their own overrides).
RUNS = "results/runs/{exp}/{setting}/{sched}/lr{lr}/seed{seed}"


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    setting=r"[A-Za-z][A-Za-z0-9_]*",
    sched=r"const|e\d+to[0-9.e+-]+",
    lr=r"x?[0-9][0-9.e+-]*",
    seed=r"\d+",
    dataset=r"fashion-mnist|cifar10",


def data_path(setting):
    """The prepared tensor file of a setting's dataset subset."""
    s = config["settings"][setting]
    return f"results/data/{s['dataset']}_n{s['n_train']}_t{s['n_test']}_s{s['subset_seed']}.pt"


def data_spec(wildcards):
    d = config["data"]
    return {
        "dataset": wildcards.dataset,
        "n_train": int(wildcards.n_train),
        "n_test": int(wildcards.n_test),
        "seed": int(wildcards.subset_seed),
        "root": d["fashion_mnist_dir"] if wildcards.dataset == "fashion-mnist" else d["cifar10_dir"],
        "download": d["download"],
        "cache_dir": d["cache_dir"],
    }


def run_files(setting, lr, seed, sched="const", name="cube.nc", exp="sweep"):
    """A run's file; ``lr`` is a learning rate or already its path name (``x0.5``: 0.5 x eta_eos)."""
    tag = lr if isinstance(lr, str) else lr_tag(lr)
    return f"{RUNS}/{name}".format(exp=exp, setting=setting, sched=sched, lr=tag, seed=seed)


def schedule_of(wildcards):
    return schedule_from_tag(wildcards.sched)


def _configured(fn, wildcards):
    try:
        return fn(config, wildcards.exp, wildcards.setting, schedule_of(wildcards))
    except ConfigError as err:
        raise WorkflowError(f"eosflow: {err}") from None


def run_config(wildcards):
    """The part of the config a run's training depends on (its params: changing anything else,
    e.g. hessian.k, does not rerun it)."""
    return _configured(train_job_config, wildcards)


def hessian_config(wildcards):
    return _configured(run_settings, wildcards)


def relative_of(exp, tag):
    """How a run named by a multiple of the stability limit (``lrx0.5``) gets its eta_0: the unit
    and the seeds it is taken over (fig5.lr_unit, fig5.seeds); None for an absolute eta_0."""
    if not parse_lr_tag(tag)[1]:
        return None
    if exp in FLATTENING:  # fig4's protocol: each run's own seed's limit
        return flattening_relative(config, exp)
    if exp in ("fig2", "fig12"):  # fig2.lr_relative, fig12.lr_relative: each run's own seed's limit
        return {"unit": "seed", "seeds": list(config[exp]["seeds"])}
    if exp not in ("sweep", "ablation"):
        raise WorkflowError(f"eosflow: lr{tag}: relative learning rates are for the sweep, ablation, fig2, fig12 "
                            "and progressive-flattening groups only")
    return {"unit": config["fig5"]["lr_unit"], "seeds": list(config["fig5"]["seeds"])}


def relative_spec(wildcards):
    return relative_of(wildcards.exp, wildcards.lr)


def fork_parent(wildcards):
    """fig2's branch runs start from the baseline's snapshot at their switch epoch."""
    if wildcards.exp != "fig2" or wildcards.sched == "const":
        return {}
    parent = dict(exp="fig2", setting=wildcards.setting, lr=wildcards.lr, seed=wildcards.seed, sched="const")
    return {"parent_metrics": f"{RUNS}/metrics.nc".format(**parent),
            "parent_snapshots": f"{RUNS}/snapshots.pt".format(**parent)}


def gpu_request(wildcards=None):
    return 1 if config["device"] == "cuda" else 0


def fig5_cubes(wildcards=None):
    c = config["fig5"]
    return [run_files(s, tag, seed) for s in c["settings"] for tag in sweep_lr_tags(c) for seed in c["seeds"]]


def fig5_cubes_by_setting():
    c = config["fig5"]
    return {s: [run_files(s, tag, seed) for tag in sweep_lr_tags(c) for seed in c["seeds"]] for s in c["settings"]}


def twin_cubes(settings, ratios, exp):
    """{setting: cubes}: the sweep runs (exp sweep: plain GD) or their clamped twins (exp ablation)
    of ``settings`` at the multiples ``ratios`` of the stability limit, for every fig5 seed."""
    return {s: [run_files(s, relative_tag(r), seed, exp=exp) for r in ratios for seed in config["fig5"]["seeds"]]
            for s in settings}


def comparison_cubes():
    """The summaries of the ablation and the generalization map: {name: {setting: cubes}}."""
    a, m = config["ablation"], config["generalization_map"]
    above = [r for r in m["lrs_relative"] if r > 1]
    return {
        "ablation/plain": twin_cubes([a["setting"]], a["lrs_relative"], "sweep"),
        "ablation/clamped": twin_cubes([a["setting"]], a["lrs_relative"], "ablation"),
        "generalization_map/plain": twin_cubes(m["settings"], m["lrs_relative"], "sweep"),
        "generalization_map/clamped": twin_cubes(m["ablation"], above, "ablation"),
    }


def flattening_runs(name):
    """The grid of progressive-flattening block ``name`` (fig4, fig6, mse_flattening): one row
    {lr0, epoch, seed, path} per (η₀, e, seed); e = 0 is the η_small run, shared by every η₀."""
    return flattening_rows(config, name, lambda s, lr, seed, sched, exp: run_files(s, lr, seed, sched=sched, exp=exp))


def fig4_runs():
    """fig4's grid (flattening_runs of the fig4 block)."""
    return flattening_runs("fig4")


def flattening_title(name):
    return flattening_figure_title(config, name)


def block_cubes(block):
    """The cubes of a figure block's grid of absolute ``lrs`` × ``seeds`` in its ``setting``
    (ext/eos, fig9); a setting that is not defined fails with the key's name."""
    c = config[block]
    if c["setting"] not in config["settings"]:
        raise WorkflowError(f"eosflow: config key {block}.setting: unknown setting {c['setting']!r}; "
                            f"defined settings: {sorted(config['settings'])}")
    return [run_files(c["setting"], lr, seed, exp=block) for lr in c["lrs"] for seed in c["seeds"]]


def eos_cubes(wildcards=None):
    return block_cubes("eos")


def figure_outputs(fig):
    return [f"figures/{fig}.pdf", f"figures/{fig}.png", f"figures/{fig}.claims.json"]


def all_targets():
    return [p for fig in IMPLEMENTED for p in figure_outputs(fig)]


# -- Runs of other optimizers (minibatch SGD, Adam, RMSprop, Clipped-Ada) and their two figures -----
from eosflow.optimizer_config import (  # noqa: E402
    OPT_FIGURES, clipped_ada_runs, optimizer_run_config, sgd_flattening_runs,
)

IMPLEMENTED += [f"ext/{f}" for f in OPT_FIGURES]
# One directory per optimizer run: {optfig} is the figure block whose train/hessian overrides apply,
# {opt} the optimizer's path name (eosflow.optimizer_runs.opt_tag).
OPT_RUNS = "results/runs/{optfig}/{setting}/{opt}/lr{lr}/seed{seed}"


wildcard_constraints:
    optfig="|".join(OPT_FIGURES),
    opt=r"(gd|sgd|adam|rmsprop|clipped_adam|clipped_rmsprop)(_[cmb][0-9.e+-]+)*",


def optimizer_run_cfg(wildcards):
    """The part of the config an optimizer run depends on (its params)."""
    try:
        return optimizer_run_config(config, wildcards.optfig, wildcards.setting, wildcards.opt)
    except (ConfigError, ValueError) as err:
        raise WorkflowError(f"eosflow: {err}") from None


def sgd_flattening_rows():
    """sgd_flattening's runs: batch size, eta kind and value, seed, cube path."""
    return sgd_flattening_runs(config)


def sgd_flattening_cubes(wildcards=None):
    return [r["path"] for r in sgd_flattening_rows()]


def clipped_ada_rows():
    """clipped_ada's runs: arm, clip (None: unclipped), seed, cube path."""
    return clipped_ada_runs(config)


def clipped_ada_cubes(wildcards=None):
    return [r["path"] for r in clipped_ada_rows()]
