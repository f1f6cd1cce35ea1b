# fig4's protocol (progressive flattening) in the second setting (fig6) and with MSE loss
# (ext/mse_flattening): the blocks fig6 and mse_flattening, the runs results/runs/<block>/...


rule fig6:
    input:
        [r["path"] for r in flattening_runs("fig6")],
    output:
        pdf=report("figures/fig6.pdf", caption="../report/fig6.rst", category="Figures"),
        png="figures/fig6.png",
        claims="figures/fig6.claims.json",
    params:
        runs=flattening_runs("fig6"),
        lr_small=config["fig6"]["lr_small"],
        figure="fig6",
        title=flattening_title(config, "fig6"),
        relative=config["fig6"]["lrs_relative"] is not None,
    log:
        "results/logs/figures/fig6.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/flattening.py"


rule mse_flattening:
    input:
        [r["path"] for r in flattening_runs("mse_flattening")],
    output:
        pdf=report("figures/ext/mse_flattening.pdf", caption="../report/mse_flattening.rst", category="Figures"),
        png="figures/ext/mse_flattening.png",
        claims="figures/ext/mse_flattening.claims.json",
    params:
        runs=flattening_runs("mse_flattening"),
        lr_small=config["mse_flattening"]["lr_small"],
        figure="ext/mse_flattening",
        title=flattening_title(config, "mse_flattening"),
        relative=config["mse_flattening"]["lrs_relative"] is not None,
    log:
        "results/logs/figures/ext/mse_flattening.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/flattening.py"
