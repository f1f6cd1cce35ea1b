"""Checkpoint fig2_instabilities: one seed's baseline loss spikes -> the plan of its fig2 and fig3 jobs."""
from eosflow.cubes import open_cube
from eosflow.files import write_json
from eosflow.logs import rule_logging
from eosflow.plans import plan_fig2

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    plan = plan_fig2(open_cube(sm.input.cube), sm.params.fig2, sm.params.fig3)
    write_json(plan, sm.output[0])
