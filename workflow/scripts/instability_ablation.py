"""figures/ext/instability_ablation.pdf: plain GD beside its stability-clamped twin."""
from eosflow.cubes import load_netcdf
from eosflow.figures.ablation import make_ablation
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    make_ablation(load_netcdf(sm.input.plain, "ablation summary (plain runs)"),
                  load_netcdf(sm.input.clamped, "ablation summary (clamped twins)"), sm.params.clamp,
                  sm.output.pdf, sm.output.png, sm.output.claims)
