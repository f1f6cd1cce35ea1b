"""Rules fig3_slices and fig12_slices: L and S along the gradient direction at snapshots of one
instability of one seed's run (fig3: the fig2 baseline; fig12: its own run), as that seed's plan
chose them."""
from eosflow.figures.fig3 import nothing_to_slice
from eosflow.files import read_json
from eosflow.jobs.slices import run_slices
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
p = sm.params
with rule_logging(sm.log[0], sm.threads) as progress:
    plan = read_json(sm.input.plan, f"{p.run} plan")
    if not plan[p.steps_key]:
        raise SystemExit(nothing_to_slice(p.figure, p.run, [plan], p.instability_key) + f" ({sm.input.plan})")
    run_slices(p.cfg, p.setting, sm.input.data, sm.input.snapshots, plan[p.steps_key], float(plan["lr"]), sm.output[0],
               p.block, seed=int(plan["seed"]), progress=progress, block=p.figure)
