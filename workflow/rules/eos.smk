# figures/ext/eos.pdf: the edge of stability (S(theta) against 2/eta, Cohen et al. 2021).


rule eos:
    input:
        eos_cubes,
    output:
        pdf=report("figures/ext/eos.pdf", caption="../report/eos.rst", category="Figures"),
        png="figures/ext/eos.png",
        claims="figures/ext/eos.claims.json",
    log:
        "results/logs/figures/eos.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/eos.py"
