# Figure 2: one GD run per seed above its stability limit, its loss spikes, eigenvector rotation
# through them, and branch runs that switch to a small η inside one. Per seed s: the baseline
# (results/runs/fig2/<setting>/const/lr<tag>/seed<s>/), its plan and eigenvectors
# (results/figures/fig2/seed<s>/), its branch runs; the figure draws the first seed, its claims take
# every seed. Its input functions (seed_run, seed_files, fig2_settings, fig2_branch_cubes; inputs.smk)
# serve fig3 and fig12 too (workflow/rules/fig3.smk, fig12.smk).


checkpoint fig2_instabilities:
    # A seed's spikes decide which epochs need eigenvectors, where its branches start and what fig3
    # slices: the DAG grows from this rule's outputs.
    input:
        cube=seed_run("fig2", "cube.nc"),
    output:
        "results/figures/fig2/seed{seed}/plan.json",
    params:
        fig2=config["fig2"],
        fig3=config["fig3"],
    log:
        "results/logs/figures/fig2_instabilities_seed{seed}.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig2_plan.py"


rule fig2_vectors:
    # A baseline's top-k eigenvectors at its planned epochs only (inside the chosen spikes and the
    # branches' window): storage stays bounded however long the run is.
    input:
        data=data_path(config["fig2"]["setting"]),
        metrics=seed_run("fig2", "metrics.nc"),
        snapshots=seed_run("fig2", "snapshots.pt"),
        plan="results/figures/fig2/seed{seed}/plan.json",
    output:
        "results/figures/fig2/seed{seed}/vectors.nc",
    params:
        cfg=fig2_settings({"eigvec_every": 1}),
        setting=config["fig2"]["setting"],
    log:
        "results/logs/figures/fig2_vectors_seed{seed}.log",
    benchmark:
        "results/benchmarks/figures/fig2_vectors_seed{seed}.tsv"
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
        baselines=seed_files(seed_run("fig2", "cube.nc"), "fig2"),
        vectors=seed_files("results/figures/fig2/seed{seed}/vectors.nc", "fig2"),
        plans=seed_files("results/figures/fig2/seed{seed}/plan.json", "fig2"),
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
