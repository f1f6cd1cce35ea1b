"""Rule fig1: the DLN figure (regimes of gamma_beta, loss landscape, eigenvector orientations)."""
import logging

from eosflow.cubes import load_netcdf
from eosflow.figures.fig1 import make_fig1
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    ds = load_netcdf(sm.input[0], "DLN trajectories")
    claims = make_fig1(ds, sm.output.pdf, sm.output.png, sm.output.claims)
    for c in claims:
        logging.getLogger("eosflow.fig1").info("claim %s: %s = %s (%s) holds=%s",
                                               c.name, c.statistic, c.value, c.threshold, c.holds)
