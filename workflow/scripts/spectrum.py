"""Extension target ext/spectrum: the Hessian's density through fig2's instabilities; the first seed
drawn, the claims over every seed measured (spectrum.seeds)."""
from eosflow.cubes import load_netcdf
from eosflow.figures.spectrum import make_spectrum
from eosflow.files import read_json
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    plans = [read_json(p, "fig2 plan") for p in sm.input.plans]
    densities = [load_netcdf(p, "spectrum densities", require=("density", "slq_nodes", "slq_weights", "loss"))
                 for p in sm.input.densities]
    make_spectrum(densities, plans, sm.output.pdf, sm.output.png, sm.output.claims)
