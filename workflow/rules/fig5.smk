# Figure 5: validation accuracy against eta_0 below and above the stability limit (the sweep group).


rule fig5_summary:
    input:
        fig5_cubes,
    output:
        "results/figures/fig5/summary.nc",
    params:
        by_setting=fig5_cubes_by_setting(),
        stability=config["stability"],
    log:
        "results/logs/figures/fig5_summary.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/summarize_runs.py"


rule fig5:
    input:
        "results/figures/fig5/summary.nc",
    output:
        pdf=report("figures/fig5.pdf", caption="../report/fig5.rst", category="Figures"),
        png="figures/fig5.png",
        claims="figures/fig5.claims.json",
    log:
        "results/logs/figures/fig5.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig5.py"
