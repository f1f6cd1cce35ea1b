# Figure 9: test accuracy and final sharpness against eta on a x2 grid, up to and past divergence, in
# the second setting (group fig9: results/runs/fig9/<setting>/const/lr<eta>/seed<s>/, fig9's overrides).


rule fig9_summary:
    input:
        fig9_cubes,
    output:
        "results/figures/fig9/summary.nc",
    params:
        by_setting=lambda wildcards: {config["fig9"]["setting"]: fig9_cubes()},
        stability=config["stability"],
    log:
        "results/logs/figures/fig9_summary.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/summarize_runs.py"


rule fig9:
    input:
        "results/figures/fig9/summary.nc",
    output:
        pdf=report("figures/fig9.pdf", caption="../report/fig9.rst", category="Figures"),
        png="figures/fig9.png",
        claims="figures/fig9.claims.json",
    log:
        "results/logs/figures/fig9.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig9.py"
