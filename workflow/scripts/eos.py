"""Extension target ext/eos: S(θ) against 2/η over training for several η."""
from eosflow.cubes import open_cube
from eosflow.figures.eos import make_eos
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_eos([open_cube(p) for p in sm.input], sm.output.pdf, sm.output.png, sm.output.claims)
