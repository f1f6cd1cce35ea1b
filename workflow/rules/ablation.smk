# figures/ext/instability_ablation.pdf and figures/ext/generalization_map.pdf: does crossing the
# stability limit cause the generalization gain? Plain GD (fig5's sweep runs) beside stability-clamped
# twins (exp ablation: train.clamp), and fig5's statistics over a list of settings.


rule comparison_summary:
    # one summary cube per group of runs: ablation/{plain,clamped}, generalization_map/{plain,clamped}
    input:
        lambda w: [p for paths in comparison_cubes()[f"{w.figure}/{w.twin}"].values() for p in paths],
    output:
        "results/figures/{figure}/{twin}.nc",
    wildcard_constraints:
        figure="ablation|generalization_map",
        twin="plain|clamped",
    params:
        by_setting=lambda w: comparison_cubes()[f"{w.figure}/{w.twin}"],
        stability=config["stability"],
    log:
        "results/logs/figures/{figure}_{twin}_summary.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/summarize_runs.py"


rule instability_ablation:
    input:
        plain="results/figures/ablation/plain.nc",
        clamped="results/figures/ablation/clamped.nc",
    output:
        pdf=report("figures/ext/instability_ablation.pdf", caption="../report/instability_ablation.rst",
                   category="Figures"),
        png="figures/ext/instability_ablation.png",
        claims="figures/ext/instability_ablation.claims.json",
    params:
        clamp=lambda w: run_settings(config, "ablation", config["ablation"]["setting"])["train"]["clamp"],
    log:
        "results/logs/figures/instability_ablation.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/instability_ablation.py"


rule generalization_map:
    input:
        plain="results/figures/generalization_map/plain.nc",
        clamped="results/figures/generalization_map/clamped.nc",
    output:
        pdf=report("figures/ext/generalization_map.pdf", caption="../report/generalization_map.rst",
                   category="Figures"),
        png="figures/ext/generalization_map.png",
        claims="figures/ext/generalization_map.claims.json",
    log:
        "results/logs/figures/generalization_map.log",
    resources:
        runtime=10,
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/generalization_map.py"
