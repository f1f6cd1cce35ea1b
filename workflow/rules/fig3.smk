# Figures 3 and 12: loss and sharpness along the gradient direction at snapshots of one loss spike
# per seed. fig3 slices each fig2 seed's baseline (its plan, results/figures/fig2/seed<s>/plan.json);
# fig12 slices runs of its own in the second setting (its plans, workflow/rules/fig12.smk). The same
# two rules for both, one pair per figure: {fig}_slices (one job per seed with a spike to slice,
# results/figures/{fig}/seed<s>/slices.nc) and {fig} (the first such seed drawn, the claims over all).

# figure -> the block of the runs it slices, the checkpoint that plans them, and where a plan keeps
# the sliced spike
SLICE_FIGURES = {
    "fig3": {"run": "fig2", "checkpoint": "fig2_instabilities", "instability_key": "fig3_instability",
             "steps_key": "fig3_steps"},
    "fig12": {"run": "fig12", "checkpoint": "fig12_plan", "instability_key": "slice_instability",
              "steps_key": "slice_steps"},
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


def sliced_seeds(fig, spec):
    """The slices files of the seeds whose plan found a spike to slice (known once each seed's
    checkpoint has run); the figure's job reads every plan, and names the seeds left out."""

    def inputs(wildcards):
        out = []
        for seed in config[spec["run"]]["seeds"]:
            with open(getattr(checkpoints, spec["checkpoint"]).get(seed=seed).output[0]) as f:
                if json.load(f)[spec["steps_key"]]:
                    out.append(f"results/figures/{fig}/seed{seed}/slices.nc")
        return out

    return inputs


for _fig, _slice in SLICE_FIGURES.items():

    rule:
        name:
            f"{_fig}_slices"
        input:
            unpack(slice_job_inputs(_slice["run"])),
            snapshots=seed_run(_slice["run"], "snapshots.pt"),
            plan=f"results/figures/{_slice['run']}/seed{{seed}}/plan.json",
        output:
            f"results/figures/{_fig}/seed{{seed}}/slices.nc",
        params:
            cfg=slice_job_settings(_slice["run"]),
            setting=config[_slice["run"]]["setting"],
            block={k: config[_fig][k] for k in SLICE_KEYS},
            figure=_fig,
            run=_slice["run"],
            instability_key=_slice["instability_key"],
            steps_key=_slice["steps_key"],
        log:
            f"results/logs/figures/{_fig}_slices_seed{{seed}}.log",
        benchmark:
            f"results/benchmarks/figures/{_fig}_slices_seed{{seed}}.tsv"
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
            plans=seed_files(f"results/figures/{_slice['run']}/seed{{seed}}/plan.json", _slice["run"]),
            slices=sliced_seeds(_fig, _slice),
        output:
            pdf=report(f"figures/{_fig}.pdf", caption=f"../report/{_fig}.rst", category="Figures"),
            png=f"figures/{_fig}.png",
            claims=f"figures/{_fig}.claims.json",
        params:
            figure=_fig,
            run=_slice["run"],
            instability_key=_slice["instability_key"],
            steps_key=_slice["steps_key"],
        log:
            f"results/logs/figures/{_fig}.log",
        resources:
            runtime=10,
        conda:
            "../../envs/plot.yaml"
        script:
            "../scripts/fig3.py"
