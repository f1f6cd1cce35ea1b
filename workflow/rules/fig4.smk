# Figure 4: progressive flattening (S_max after switching eta_0 -> eta_small at epoch e).


rule fig4:
    input:
        [r["path"] for r in fig4_runs()],
    output:
        pdf=report("figures/fig4.pdf", caption="../report/fig4.rst", category="Figures"),
        png="figures/fig4.png",
        claims="figures/fig4.claims.json",
    params:
        runs=fig4_runs(),
        lr_small=config["fig4"]["lr_small"],
    log:
        "results/logs/figures/fig4.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig4.py"
