# Figures 2 and 3: one GD run above its stability limit, its loss spikes, eigenvector rotation
# through them, branch runs that switch to a small η inside one, and landscape slices (fig3).


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
        "../../envs/eosflow.yaml"
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
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig2.py"


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
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig3.py"
