# Figure 12: fig3 for the second setting: one GD run of its own above its stability limit (group
# fig12), the spike to slice chosen from its loss (rule fig12_plan, as fig2's plan chooses fig3's),
# then the rules fig12_slices and fig12 of workflow/rules/fig3.smk.


rule fig12_plan:
    # No checkpoint: what fig12 slices is read by its slices job, the DAG does not depend on it.
    input:
        cube=block_run("fig12", "cube.nc"),
    output:
        "results/figures/fig12/plan.json",
    params:
        block=config["fig12"],
    log:
        "results/logs/figures/fig12_plan.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig12_plan.py"
