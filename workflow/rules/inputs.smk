# Input and parameter functions: which files a target needs, and what each job is given (a run's
# RunSpec record, eosflow.jobs.spec, built here once from the config and the wildcards).
import json

from eosflow.config import run_settings
from eosflow.config.experiments import unknown_setting
from eosflow.config.flattening import flattening_rows, flattening_title
from eosflow.config.datasets import dataset_for_tag, dataset_spec, dataset_tag
from eosflow.config.optimizers import clipped_ada_runs, sgd_flattening_runs
from eosflow.config.tags import lr_tag, relative_tag, schedule_from_tag, schedule_tag, sweep_lr_tags
from eosflow.jobs.spec import optimizer_run_spec, run_spec
from eosflow.plans import block_lr_tag


def data_path(setting):
    """The prepared tensor file of a setting's dataset subset (a user's dataset: its tag,
    eosflow.config.datasets.dataset_tag; the built-ins keep their names)."""
    s = config["settings"][setting]
    return f"results/data/{dataset_tag(s['dataset'])}_n{s['n_train']}_t{s['n_test']}_s{s['subset_seed']}.pt"


def data_spec(wildcards):
    """prepare_dataset's keyword arguments: a built-in by name and its folder; a user's dataset as its
    full canonical spec (so that changing any of its options reruns the job) and data.torchvision_dir."""
    d = config["data"]
    spec = {
        "dataset": wildcards.dataset,
        "n_train": int(wildcards.n_train),
        "n_test": int(wildcards.n_test),
        "seed": int(wildcards.subset_seed),
        "root": d["fashion_mnist_dir"] if wildcards.dataset == "fashion-mnist" else d["cifar10_dir"],
        "download": d["download"],
        "cache_dir": d["cache_dir"],
    }
    if wildcards.dataset not in ("fashion-mnist", "cifar10"):
        spec["dataset"] = dataset_spec(_user_dataset(wildcards.dataset))
        spec["root"] = d["torchvision_dir"]
    return spec


def _user_dataset(tag):
    try:
        return dataset_for_tag(config, tag)
    except KeyError:
        raise WorkflowError(f"eosflow: results/data/{tag}_...: no setting's dataset has the tag {tag!r}") from None


def data_inputs(wildcards):
    """The file a prepared dataset is made from, where it is one (an npz file): editing it reruns the job."""
    if wildcards.dataset in ("fashion-mnist", "cifar10"):
        return []
    spec = dataset_spec(_user_dataset(wildcards.dataset))
    return [spec["path"]] if spec["kind"] == "npz" else []


def run_files(setting, lr, seed, sched="const", name="cube.nc", exp="sweep"):
    """A run's file; ``lr`` is a learning rate or already its path name (``x0.5``: 0.5 x eta_eos)."""
    tag = lr if isinstance(lr, str) else lr_tag(lr)
    return f"{RUNS}/{name}".format(exp=exp, setting=setting, sched=sched, lr=tag, seed=seed)


def _configured(fn, *args):
    """``fn(config, *args)``, a config problem that only a requested job reveals failing with its message."""
    try:
        return fn(config, *args)
    except (ConfigError, ValueError) as err:
        raise WorkflowError(f"eosflow: {err}") from None


def train_spec(wildcards):
    """The run a training job trains: its RunSpec record (its params: changing anything else, e.g.
    hessian.k, does not rerun it)."""
    w = wildcards
    return _configured(run_spec, w.exp, w.setting, w.lr, int(w.seed), w.sched).record()


def group_specs(wildcards):
    """The runs of a train_group job (a setting and seed's whole fig5 grid): their RunSpec records."""
    tags = sweep_lr_tags(config["fig5"])
    return [_configured(run_spec, "sweep", wildcards.setting, tag, int(wildcards.seed)).record() for tag in tags]


def hessian_config(wildcards):
    """The hessian block a run's spectra are measured with (the run itself is read from its metrics)."""
    hessian = _configured(run_settings, wildcards.exp, wildcards.setting, schedule_from_tag(wildcards.sched))["hessian"]
    return {"hessian": hessian}


def optimizer_spec(wildcards):
    """The optimizer run a job trains and measures: its RunSpec record (with its hessian block)."""
    w = wildcards
    return _configured(optimizer_run_spec, w.optfig, w.setting, w.opt, w.lr, int(w.seed)).record()


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
    return [p for paths in fig5_cubes_by_setting().values() for p in paths]


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


def seed_run(block, name, seed="{seed}"):
    """A file of the run of figure block ``block`` (fig2's baseline, which fig3 slices; fig12's run)
    for ``seed`` (default: the ``{seed}`` wildcard), at the block's η (``lr`` or ``lr_relative``)."""
    c = config[block]
    return run_files(c["setting"], block_lr_tag(c), seed, name=name, exp=block)


def seed_files(pattern, block):
    """``pattern`` (with ``{seed}``) for every seed of ``block``, in ``block.seeds`` order."""
    return [pattern.format(seed=s) for s in config[block]["seeds"]]


def fig2_settings(hessian=None):
    c = config["fig2"]
    cfg = run_settings(config, "fig2", c["setting"])
    cfg["hessian"].update(hessian or {})
    return cfg


def fig2_branch_cubes(wildcards=None):
    """Every seed's branch runs' cubes: known once the checkpoint fig2_instabilities has found that
    seed's spikes."""
    c = config["fig2"]
    cubes = []
    for seed in c["seeds"]:
        with open(checkpoints.fig2_instabilities.get(seed=seed).output[0]) as f:
            b = json.load(f)["branch"]
        cubes += [run_files(c["setting"], block_lr_tag(c), seed, exp="fig2",
                            sched=schedule_tag({"kind": "switch", "epoch": e, "lr_small": b["lr_small"]}))
                  for e in b["epochs"]]
    return cubes


def flattening_runs(name):
    """The grid of progressive-flattening block ``name`` (fig4, fig6, mse_flattening): one row
    {lr0, epoch, seed, path} per (η₀, e, seed); e = 0 is the η_small run, shared by every η₀."""
    return flattening_rows(config, name, lambda s, lr, seed, sched, exp: run_files(s, lr, seed, sched=sched, exp=exp))


def block_cubes(block):
    """The cubes of a figure block's grid of absolute ``lrs`` × ``seeds`` in its ``setting``
    (ext/eos, fig9); a setting that is not defined fails with the key's name."""
    c = config[block]
    if c["setting"] not in config["settings"]:
        problem = unknown_setting(f"{block}.setting", c["setting"], config)
        raise WorkflowError(f"eosflow: {problem}")
    return [run_files(c["setting"], lr, seed, exp=block) for lr in c["lrs"] for seed in c["seeds"]]


def eos_cubes(wildcards=None):
    return block_cubes("eos")


def fig9_cubes(wildcards=None):
    return block_cubes("fig9")


def sgd_flattening_cubes(wildcards=None):
    return [r["path"] for r in sgd_flattening_runs(config)]


def clipped_ada_cubes(wildcards=None):
    return [r["path"] for r in clipped_ada_runs(config)]


def figure_outputs(fig):
    return [f"figures/{fig}.pdf", f"figures/{fig}.png", f"figures/{fig}.claims.json"]


def all_targets():
    return [p for fig in IMPLEMENTED for p in figure_outputs(fig)]
