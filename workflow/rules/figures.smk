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
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig1.py"


rule fig5_summary:
    input:
        fig5_cubes,
    output:
        "results/figures/fig5/summary.nc",
    params:
        by_setting=fig5_cubes_by_setting(),
    log:
        "results/logs/figures/fig5_summary.log",
    resources:
        runtime=10,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/summarize_runs.py"


rule fig5:
    input:
        "results/figures/fig5/summary.nc",
    output:
        pdf=report("figures/fig5.pdf", caption="../report/fig5.rst", category="Figures"),
        png="figures/fig5.png",
        claims="figures/fig5.claims.json",
    log:
        "results/logs/figures/fig5.log",
    resources:
        runtime=10,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/fig5.py"


rule pending_figure:
    # Catalog targets not built yet: they appear in the DAG and fail with a message, never a fake figure.
    output:
        "figures/{pending}.pdf",
    wildcard_constraints:
        pending="|".join(PENDING + [f"ext/{e}" for e in PENDING_EXT]),
    log:
        "results/logs/figures/pending_{pending}.log",
    conda:
        "../../envs/eosflow.yaml"
    shell:
        "echo 'eosflow: figures/{wildcards.pending}.pdf is not built yet: its rules are open work "
        "(see the README figure table).' | tee {log} >&2; exit 1"
