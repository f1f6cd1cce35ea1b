"""Extension target ext/layers: per-layer top eigenvalue over training for fig5's runs below and above the limit."""
from eosflow.cubes import load_netcdf, open_cube
from eosflow.figures.layers import make_layers
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_layers([load_netcdf(p, "layer spectra", require=("layer_eigval",)) for p in sm.input.layers],
                [open_cube(p) for p in sm.input.cubes], sm.output.pdf, sm.output.png, sm.output.claims)
