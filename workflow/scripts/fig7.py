"""Figure 7: (eta_0, 1 - rho, S_final) of the fig5 sweep coloured by accuracy, and the table of rho."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig7 import make_fig7
from eosflow.figures.sweep_stats import NEEDED
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    summary = load_netcdf(sm.input[0], "fig5 summary", require=NEEDED)
    make_fig7(summary, sm.output.pdf, sm.output.png, sm.output.claims, k=sm.params.k)
