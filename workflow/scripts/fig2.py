"""Figure 2: eigenvector rotation through instabilities, and its undoing by branch runs."""
import json

from eosflow.cubes import open_cube
from eosflow.figures.fig2 import make_fig2
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    with open(sm.input.plan) as f:
        plan = json.load(f)
    make_fig2(open_cube(sm.input.baseline), open_cube(sm.input.vectors, require=()),
              [open_cube(p, require=("eigvec",)) for p in sm.input.branches], plan,
              sm.output.pdf, sm.output.png, sm.output.claims)
