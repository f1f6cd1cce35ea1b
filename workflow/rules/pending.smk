# Catalog targets not built yet: they appear in the DAG and fail with a message, never a stand-in.


rule pending_figure:
    # Catalog targets not built yet: they appear in the DAG and fail with a message, never a fake figure.
    output:
        "figures/{pending}.pdf",
    wildcard_constraints:
        pending="|".join(PENDING + [f"ext/{e}" for e in PENDING_EXT]),
    log:
        "results/logs/figures/pending_{pending}.log",
    conda:
        "../../envs/plot.yaml"
    shell:
        "echo 'eosflow: figures/{wildcards.pending}.pdf is not built yet: its rules are open work "
        "(see the README figure table).' | tee {log} >&2; exit 1"
