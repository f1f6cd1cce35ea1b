"""Figure 2: eigenvector rotation through instabilities, and its undoing by branch runs."""
from eosflow.cubes import open_cube
from eosflow.figures.fig2 import make_fig2
from eosflow.files import read_json
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    plan = read_json(sm.input.plan, "fig2 plan")
    make_fig2(open_cube(sm.input.baseline), open_cube(sm.input.vectors, require=()),
              [open_cube(p, require=("eigvec",)) for p in sm.input.branches], plan,
              sm.output.pdf, sm.output.png, sm.output.claims)
