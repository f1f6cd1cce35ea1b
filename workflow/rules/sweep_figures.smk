# Figures 7 and 8: eigenspace rotation, final sharpness and accuracy across the fig5 sweep (its summary;
# no runs of their own).


rule fig7:
    input:
        "results/figures/fig5/summary.nc",
    output:
        pdf=report("figures/fig7.pdf", caption="../report/fig7.rst", category="Figures"),
        png="figures/fig7.png",
        claims="figures/fig7.claims.json",
    params:
        k=config["hessian"]["k"],
    log:
        "results/logs/figures/fig7.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig7.py"


rule fig8:
    input:
        "results/figures/fig5/summary.nc",
    output:
        pdf=report("figures/fig8.pdf", caption="../report/fig8.rst", category="Figures"),
        png="figures/fig8.png",
        claims="figures/fig8.claims.json",
    log:
        "results/logs/figures/fig8.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig8.py"
