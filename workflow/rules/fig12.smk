# Figure 12: fig3 for the second setting: one GD run per seed of its own above its stability limit
# (group fig12), the spike to slice chosen from its loss (checkpoint fig12_plan, as fig2's plan
# chooses fig3's), then the rules fig12_slices and fig12 of workflow/rules/fig3.smk.


checkpoint fig12_plan:
    # Whether a seed has a spike to slice decides whether its slices job runs: a checkpoint.
    input:
        cube=seed_run("fig12", "cube.nc"),
    output:
        "results/figures/fig12/seed{seed}/plan.json",
    params:
        block=config["fig12"],
    log:
        "results/logs/figures/fig12_plan_seed{seed}.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/fig12_plan.py"
