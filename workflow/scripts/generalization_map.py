"""figures/ext/generalization_map.pdf: fig5's headline statistics over a list of settings."""
from eosflow.cubes import load_netcdf
from eosflow.figures.generalization_map import make_map
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_map(load_netcdf(sm.input.plain, "generalization map summary (plain runs)"),
             load_netcdf(sm.input.clamped, "generalization map summary (clamped twins)"),
             sm.output.pdf, sm.output.png, sm.output.claims)
