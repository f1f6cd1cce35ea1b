# Configuration validation, wildcard constraints and every input function.
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
from eosflow.config import ConfigError, load_schema, lr_tag, validate_config  # noqa: E402
from eosflow.training import schedule_from_tag  # noqa: E402

try:
    _validated = validate_config(
        config, load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
    )
except ConfigError as _err:
    raise WorkflowError(f"eosflow: {_err}\nFix the key in config/config.yaml (or your --configfile).") from None
config.clear()
config.update(_validated)

IMPLEMENTED = ["fig1", "fig5"]
# Catalog targets whose rules later work fills in (see README); they fail with a clear message.
PENDING = ["fig2", "fig3", "fig4", "fig6", "fig7", "fig8", "fig9", "fig12"]
PENDING_EXT = ["mse_flattening", "eos", "sgd_flattening", "clipped_ada"]
RUNS = "results/runs/{setting}/{sched}/lr{lr}/seed{seed}"


wildcard_constraints:
    setting=r"[A-Za-z][A-Za-z0-9_]*",
    sched=r"const|e\d+to[0-9.e+-]+",
    lr=r"[0-9][0-9.e+-]*",
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


def run_files(setting, lr, seed, sched="const", name="cube.nc"):
    return f"{RUNS}/{name}".format(setting=setting, sched=sched, lr=lr_tag(lr), seed=seed)


def schedule_of(wildcards):
    return schedule_from_tag(wildcards.sched)


def run_config(wildcards, keys=("train",)):
    """The part of the config a run's job depends on (its params: changing anything else, e.g.
    hessian.k for the train rule, does not rerun it)."""
    out = {"device": config["device"], "settings": {wildcards.setting: config["settings"][wildcards.setting]}}
    out.update({k: config[k] for k in keys})
    return out


def hessian_config(wildcards):
    return run_config(wildcards, keys=("train", "hessian"))


def gpu_request(wildcards=None):
    return 1 if config["device"] == "cuda" else 0


def fig5_cubes(wildcards=None):
    c = config["fig5"]
    return [run_files(s, lr, seed) for s in c["settings"] for lr in c["lrs"] for seed in c["seeds"]]


def fig5_cubes_by_setting():
    c = config["fig5"]
    return {s: [run_files(s, lr, seed) for lr in c["lrs"] for seed in c["seeds"]] for s in c["settings"]}


def figure_outputs(fig):
    return [f"figures/{fig}.pdf", f"figures/{fig}.png", f"figures/{fig}.claims.json"]


def all_targets():
    return [p for fig in IMPLEMENTED for p in figure_outputs(fig)]
