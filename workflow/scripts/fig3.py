"""Figures 3 and 12: loss and sharpness along the gradient direction at snapshots of one instability
per seed; the first seed with slices drawn, the claims over every seed."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig3 import make_fig3, nothing_to_slice, unsliced_reason
from eosflow.files import read_json
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
p = sm.params
with rule_logging(sm.log[0]):
    plans = [read_json(path, f"{p.run} plan") for path in sm.input.plans]
    sliced = [plan for plan in plans if plan[p.steps_key]]
    if not sliced:
        raise SystemExit(nothing_to_slice(p.figure, p.run, plans, p.instability_key))
    if len(sliced) != len(sm.input.slices):
        raise SystemExit(f"eosflow: {p.figure}: {len(sliced)} seeds have a spike to slice but {len(sm.input.slices)} "
                         "slices files were given; rerun snakemake")
    slices = {int(plan["seed"]): load_netcdf(path, f"{p.figure} slices") for plan, path in zip(sliced, sm.input.slices)}
    left_out = {int(plan["seed"]): unsliced_reason(plan, p.instability_key) for plan in plans if not plan[p.steps_key]}
    make_fig3(slices, sm.output.pdf, sm.output.png, sm.output.claims, figure=p.figure, left_out=left_out)
