"""Figure 9: test accuracy and final sharpness against eta on a x2 grid (the fig9 runs' summary)."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig9 import make_fig9
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_fig9(load_netcdf(sm.input[0], "fig9 summary"), sm.output.pdf, sm.output.png, sm.output.claims)
