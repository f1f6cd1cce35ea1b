"""Rule fig3_slices: L and S along the gradient direction at snapshots of one instability of the fig2 run."""
from eosflow.files import read_json
from eosflow.landscape import run_slices
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    plan = read_json(sm.input.plan, "fig2 plan")
    if not plan["fig3_steps"]:
        raise SystemExit(f"eosflow: fig3 has nothing to slice: the fig2 run (eta = {plan['lr']:g}) has fewer than "
                         f"fig3.instability = {plan['fig3_instability']} loss spikes rising by fig2.min_rise = "
                         f"{plan['min_rise']:g} ({len(plan['instabilities'])} found; {sm.input.plan}). "
                         "Raise fig2.lr, train longer (fig2.train.max_epochs) or lower fig2.min_rise.")
    run_slices(sm.params.cfg, sm.params.setting, sm.input.data, sm.input.snapshots, plan["fig3_steps"],
               float(plan["lr"]), sm.output[0], sm.params.fig3, seed=int(plan["seed"]), progress=progress)
