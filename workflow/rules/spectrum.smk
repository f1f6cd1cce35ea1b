# figures/ext/spectrum.pdf: the Hessian's spectral density (stochastic Lanczos quadrature) at the onset,
# peak and end of each of fig2's chosen instabilities, per fig2 seed of spectrum.seeds (default: all
# of fig2.seeds): does an instability move only the outliers, or the bulk too? Per seed s:
# results/figures/spectrum/seed<s>/density.nc from fig2's baseline snapshots and plan; the figure
# draws the first seed, its claims take every seed measured.


def spectrum_seeds():
    """spectrum.seeds (null: fig2.seeds); a seed that is not one of fig2's fails with the key's name
    (only when ext/spectrum is asked for)."""
    seeds = config["spectrum"]["seeds"]
    fig2_seeds = config["fig2"]["seeds"]
    if seeds is None:
        return list(fig2_seeds)
    unknown = [s for s in seeds if s not in fig2_seeds]
    if unknown:
        raise WorkflowError(f"eosflow: config key spectrum.seeds: seeds {unknown} are not fig2 seeds "
                            f"(fig2.seeds: {fig2_seeds}); the densities are measured on fig2's runs")
    return list(seeds)


def spectrum_inputs(wildcards):
    seeds = spectrum_seeds()
    return {"densities": [f"results/figures/spectrum/seed{s}/density.nc" for s in seeds],
            "plans": [f"results/figures/fig2/seed{s}/plan.json" for s in seeds]}


rule spectrum_density:
    # SLQ densities at the onset, peak and end of the seed's chosen instabilities (its fig2 plan),
    # from the baseline's every-epoch snapshots
    input:
        data=data_path(config["fig2"]["setting"]),
        metrics=seed_run("fig2", "metrics.nc"),
        snapshots=seed_run("fig2", "snapshots.pt"),
        plan="results/figures/fig2/seed{seed}/plan.json",
    output:
        "results/figures/spectrum/seed{seed}/density.nc",
    params:
        cfg=fig2_settings(),
        setting=config["fig2"]["setting"],
        # spectrum.seeds picks the jobs only: changing it reruns none
        spectrum={k: v for k, v in config["spectrum"].items() if k != "seeds"},
    log:
        "results/logs/figures/spectrum_density_seed{seed}.log",
    benchmark:
        "results/benchmarks/figures/spectrum_density_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/spectrum_density.py"


rule spectrum:
    input:
        unpack(spectrum_inputs),
    output:
        pdf=report("figures/ext/spectrum.pdf", caption="../report/spectrum.rst", category="Figures"),
        png="figures/ext/spectrum.png",
        claims="figures/ext/spectrum.claims.json",
    log:
        "results/logs/figures/spectrum.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/spectrum.py"
