"""Rules fig3_slices and fig12_slices: L and S along the gradient direction at snapshots of one
instability of a run (fig3: the fig2 run; fig12: its own run), as that run's plan chose them."""
from eosflow.files import read_json
from eosflow.jobs.slices import run_slices
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
p = sm.params
with rule_logging(sm.log[0], sm.threads) as progress:
    plan = read_json(sm.input.plan, f"{p.run} plan")
    if not plan[p.steps_key]:
        raise SystemExit(f"eosflow: {p.figure} has nothing to slice: the {p.run} run (eta = {plan['lr']:g}) has fewer "
                         f"than {p.figure}.instability = {plan[p.instability_key]} loss spikes rising by {p.run}.min_rise = "
                         f"{plan['min_rise']:g} ({len(plan['instabilities'])} found; {sm.input.plan}). "
                         f"Raise {p.run}.lr, train longer ({p.run}.train.max_epochs) or lower {p.run}.min_rise.")
    run_slices(p.cfg, p.setting, sm.input.data, sm.input.snapshots, plan[p.steps_key], float(plan["lr"]), sm.output[0],
               p.block, seed=int(plan["seed"]), progress=progress, block=p.figure)
