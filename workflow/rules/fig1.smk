# Figure 1: the two-parameter diagonal linear network (closed forms and GD; no data, no training job).


rule dln_trajectories:
    output:
        "results/figures/fig1/dln.nc",
    params:
        cfg=config["fig1"],
    log:
        "results/logs/figures/dln_trajectories.log",
    resources:
        runtime=10,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/dln_trajectories.py"


rule fig1:
    input:
        "results/figures/fig1/dln.nc",
    output:
        pdf=report("figures/fig1.pdf", caption="../report/fig1.rst", category="Figures"),
        png="figures/fig1.png",
        claims="figures/fig1.claims.json",
    log:
        "results/logs/figures/fig1.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig1.py"
