# Figure 4 (progressive flattening) and the edge-of-stability check (figures/ext/eos.pdf).


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
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig4.py"


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
        "../../envs/eosflow.yaml"
    script:
        "../scripts/eos.py"
