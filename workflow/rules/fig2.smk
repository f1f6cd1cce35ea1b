# Figure 2: one GD run above its stability limit, its loss spikes, eigenvector rotation through them,
# and branch runs that switch to a small η inside one.


checkpoint fig2_instabilities:
    # The spikes decide which epochs need eigenvectors, where branches start and what fig3 slices:
    # the DAG grows from this rule's output.
    input:
        cube=fig2_run("cube.nc"),
    output:
        "results/figures/fig2/plan.json",
    params:
        fig2=config["fig2"],
        fig3=config["fig3"],
    log:
        "results/logs/figures/fig2_instabilities.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig2_plan.py"


rule fig2_vectors:
    # The baseline's top-k eigenvectors at the planned epochs only (inside the chosen spikes and
    # the branches' window): storage stays bounded however long the run is.
    input:
        data=data_path(config["fig2"]["setting"]),
        metrics=fig2_run("metrics.nc"),
        snapshots=fig2_run("snapshots.pt"),
        plan="results/figures/fig2/plan.json",
    output:
        "results/figures/fig2/vectors.nc",
    params:
        cfg=fig2_settings({"eigvec_every": 1}),
        setting=config["fig2"]["setting"],
    log:
        "results/logs/figures/fig2_vectors.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig2_vectors.py"


rule fig2:
    input:
        baseline=fig2_run("cube.nc"),
        vectors="results/figures/fig2/vectors.nc",
        plan="results/figures/fig2/plan.json",
        branches=fig2_branch_cubes,
    output:
        pdf=report("figures/fig2.pdf", caption="../report/fig2.rst", category="Figures"),
        png="figures/fig2.png",
        claims="figures/fig2.claims.json",
    log:
        "results/logs/figures/fig2.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig2.py"
