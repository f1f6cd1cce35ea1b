# figures/ext/clipped_ada.pdf: Adam and RMSprop against Clipped-Ada (the follow-up paper, arXiv 2511.12558).


rule clipped_ada:
    input:
        clipped_ada_cubes,
    output:
        pdf=report("figures/ext/clipped_ada.pdf", caption="../report/clipped_ada.rst", category="Figures"),
        png="figures/ext/clipped_ada.png",
        claims="figures/ext/clipped_ada.claims.json",
    params:
        runs=clipped_ada_runs(config),
        min_rise=config["clipped_ada"]["min_rise"],
    log:
        "results/logs/figures/clipped_ada.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/clipped_ada.py"
