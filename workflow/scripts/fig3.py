"""Figures 3 and 12: loss and sharpness along the gradient direction at snapshots of one instability."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig3 import make_fig3
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    figure = sm.params.figure
    make_fig3(load_netcdf(sm.input[0], f"{figure} slices"), sm.output.pdf, sm.output.png, sm.output.claims,
              figure=figure)
