"""Extension target ext/clipped_ada: Adam and RMSprop against Clipped-Ada (accuracy, preconditioned sharpness, spikes)."""
from eosflow.cubes import open_cube
from eosflow.figures.clipped_ada import make_clipped_ada
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    cubes = [open_cube(p, require=("train_loss", "test_acc", "sharpness", "precond_sharpness")) for p in sm.input]
    make_clipped_ada(sm.params.runs, cubes, sm.output.pdf, sm.output.png, sm.output.claims,
                     min_rise=sm.params.min_rise)
