# figures/ext/layers.pdf: per-layer top Hessian eigenvalue over training of fig5's runs (one setting,
# every seed and eta_0 of fig5's grid), below and above the stability limit.


def layers_setting():
    """The fig5 setting whose runs ext/layers measures (layers.setting; null: fig5.settings' first)."""
    s = config["layers"]["setting"] or config["fig5"]["settings"][0]
    if s not in config["fig5"]["settings"]:
        raise WorkflowError(f"eosflow: layers.setting {s!r} is not one of fig5.settings "
                            f"{config['fig5']['settings']}: ext/layers measures fig5's runs")
    return s


def layers_runs(name):
    """``name`` (layers.nc, cube.nc) of every fig5 run of the layers setting, seeds inner (fig5.seeds order)."""
    c = config["fig5"]
    return [run_files(layers_setting(), tag, seed, name=name) for tag in sweep_lr_tags(c) for seed in c["seeds"]]


def layers_config(wildcards=None):
    """The layers block's measurement keys (the setting is not one: changing it reruns no job)."""
    return {k: config["layers"][k] for k in ("every", "k", "tol", "max_iter")}


rule layer_spectra:
    input:
        data=lambda w: data_path(w.setting),
        cube=f"{RUNS}/cube.nc",
        snapshots=f"{RUNS}/snapshots.pt",
    output:
        layers=f"{RUNS}/layers.nc",
    params:
        cfg=layers_config,
    log:
        "results/logs/layer_spectra/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/layer_spectra/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/layer_spectra.py"


rule layers:
    input:
        layers=lambda w: layers_runs("layers.nc"),
        cubes=lambda w: layers_runs("cube.nc"),
    output:
        pdf=report("figures/ext/layers.pdf", caption="../report/layers.rst", category="Figures"),
        png="figures/ext/layers.png",
        claims="figures/ext/layers.claims.json",
    log:
        "results/logs/figures/layers.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/layers.py"
