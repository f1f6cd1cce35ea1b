# Figure 3: loss and sharpness along the gradient direction at snapshots of one of fig2's spikes.


rule fig3_slices:
    input:
        data=data_path(config["fig2"]["setting"]),
        snapshots=fig2_run("snapshots.pt"),
        plan="results/figures/fig2/plan.json",
    output:
        "results/figures/fig3/slices.nc",
    params:
        cfg=fig2_settings(),
        setting=config["fig2"]["setting"],
        fig3=config["fig3"],
    log:
        "results/logs/figures/fig3_slices.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig3_slices.py"


rule fig3:
    input:
        "results/figures/fig3/slices.nc",
    output:
        pdf=report("figures/fig3.pdf", caption="../report/fig3.rst", category="Figures"),
        png="figures/fig3.png",
        claims="figures/fig3.claims.json",
    log:
        "results/logs/figures/fig3.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig3.py"
