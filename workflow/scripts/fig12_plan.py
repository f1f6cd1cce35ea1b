"""Checkpoint fig12_plan: one seed's fig12 run loss spikes -> the snapshot steps its slices job takes."""
from eosflow.cubes import open_cube
from eosflow.files import write_json
from eosflow.logs import rule_logging
from eosflow.plans import plan_slices

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    write_json(plan_slices(open_cube(sm.input.cube), sm.params.block), sm.output[0])
