"""Figure 5: validation accuracy against the learning rate, below / above the stability limit."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig5 import make_fig5
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_fig5(load_netcdf(sm.input[0], "fig5 summary"), sm.output.pdf, sm.output.png, sm.output.claims)
