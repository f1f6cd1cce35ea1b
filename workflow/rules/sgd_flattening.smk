# figures/ext/sgd_flattening.pdf: flattening under minibatch SGD (the follow-up paper, arXiv 2511.12558).


rule sgd_flattening:
    input:
        sgd_flattening_cubes,
    output:
        pdf=report("figures/ext/sgd_flattening.pdf", caption="../report/sgd_flattening.rst", category="Figures"),
        png="figures/ext/sgd_flattening.png",
        claims="figures/ext/sgd_flattening.claims.json",
    params:
        runs=sgd_flattening_runs(config),
    log:
        "results/logs/figures/sgd_flattening.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/sgd_flattening.py"
