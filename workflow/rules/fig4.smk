# Figure 4: progressive flattening (S_max after switching eta_0 -> eta_small at epoch e). The same
# protocol in other settings: flattening.smk (fig6, ext/mse_flattening).


rule fig4:
    input:
        [r["path"] for r in flattening_runs("fig4")],
    output:
        pdf=report("figures/fig4.pdf", caption="../report/fig4.rst", category="Figures"),
        png="figures/fig4.png",
        claims="figures/fig4.claims.json",
    params:
        runs=flattening_runs("fig4"),
        lr_small=config["fig4"]["lr_small"],
        figure="fig4",
        title=flattening_title(config, "fig4"),
        relative=config["fig4"]["lrs_relative"] is not None,
    log:
        "results/logs/figures/fig4.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/flattening.py"
