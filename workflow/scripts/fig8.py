"""Figure 8: Spearman correlations of validation accuracy with S_final, 1 - rho and eta_0 (fig5 sweep)."""
from eosflow.cubes import load_netcdf
from eosflow.figures.fig8 import make_fig8
from eosflow.figures.sweep_stats import NEEDED
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    summary = load_netcdf(sm.input[0], "fig5 summary", require=NEEDED)
    make_fig8(summary, sm.output.pdf, sm.output.png, sm.output.claims)
