# Figures 3 and 12: loss and sharpness along the gradient direction at snapshots of one loss spike.
# fig3 slices fig2's run (fig2's plan, results/figures/fig2/plan.json); fig12 slices a run of its own
# in the second setting (fig12's plan, workflow/rules/fig12.smk). The same two rules for both, one
# pair per figure: {fig}_slices and {fig}.

# figure -> the block of the run it slices, and where that block's plan keeps the sliced spike
SLICE_FIGURES = {
    "fig3": {"run": "fig2", "instability_key": "fig3_instability", "steps_key": "fig3_steps"},
    "fig12": {"run": "fig12", "instability_key": "slice_instability", "steps_key": "slice_steps"},
}
# the keys of a figure's block that the slices use (fig12's block also holds its run's keys)
SLICE_KEYS = ("instability", "snapshots", "points", "span")


def slice_job_inputs(run):
    """The slices job's data file: looked up when the job is requested (a setting that is not
    defined fails there with the key's name, not when the workflow is parsed)."""

    def inputs(wildcards):
        if config[run]["setting"] not in config["settings"]:
            raise WorkflowError(f"eosflow: config key {run}.setting: unknown setting {config[run]['setting']!r}; "
                                f"defined settings: {sorted(config['settings'])}")
        return {"data": data_path(config[run]["setting"])}

    return inputs


def slice_job_settings(run):
    return lambda wildcards: run_settings(config, run, config[run]["setting"])


for _fig, _slice in SLICE_FIGURES.items():

    rule:
        name:
            f"{_fig}_slices"
        input:
            unpack(slice_job_inputs(_slice["run"])),
            snapshots=block_run(_slice["run"], "snapshots.pt"),
            plan=f"results/figures/{_slice['run']}/plan.json",
        output:
            f"results/figures/{_fig}/slices.nc",
        params:
            cfg=slice_job_settings(_slice["run"]),
            setting=config[_slice["run"]]["setting"],
            block={k: config[_fig][k] for k in SLICE_KEYS},
            figure=_fig,
            run=_slice["run"],
            instability_key=_slice["instability_key"],
            steps_key=_slice["steps_key"],
        log:
            f"results/logs/figures/{_fig}_slices.log",
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=gpu_request,
        conda:
            "../../envs/eosflow.yaml"
        script:
            "../scripts/fig3_slices.py"

    rule:
        name:
            _fig
        input:
            f"results/figures/{_fig}/slices.nc",
        output:
            pdf=report(f"figures/{_fig}.pdf", caption=f"../report/{_fig}.rst", category="Figures"),
            png=f"figures/{_fig}.png",
            claims=f"figures/{_fig}.claims.json",
        params:
            figure=_fig,
        log:
            f"results/logs/figures/{_fig}.log",
        resources:
            runtime=10,
        conda:
            "../../envs/plot.yaml"
        script:
            "../scripts/fig3.py"
