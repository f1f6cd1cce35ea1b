# The paper's figures 10, 11 and 13: no public text describes them, so no rule pretends to draw them.


rule undescribed_figure:
    # They appear in the DAG when asked for and fail with a message, never a stand-in figure.
    output:
        "figures/{undescribed}.pdf",
    wildcard_constraints:
        undescribed="|".join(UNDESCRIBED),
    log:
        "results/logs/figures/undescribed_{undescribed}.log",
    conda:
        "../../envs/plot.yaml"
    shell:
        "echo 'eosflow: figures/{wildcards.undescribed}.pdf is not produced: the paper'\"'\"'s "
        "{wildcards.undescribed} is not described in any public text we could reach (see the README figure "
        "table).' | tee {log} >&2; exit 1"
