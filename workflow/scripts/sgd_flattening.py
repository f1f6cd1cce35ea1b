"""Extension target ext/sgd_flattening: S(theta) under minibatch SGD at a small and a large eta per batch size."""
from eosflow.cubes import open_cube
from eosflow.figures.sgd_flattening import make_sgd_flattening
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_sgd_flattening(sm.params.runs, [open_cube(p) for p in sm.input], sm.output.pdf, sm.output.png,
                        sm.output.claims)
