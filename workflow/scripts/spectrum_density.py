"""Rule spectrum_density: one fig2 seed's Hessian spectral densities (SLQ) at the onset, peak and end of
its chosen instabilities."""
from eosflow.files import read_json
from eosflow.jobs.spectrum import run_spectrum_density
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    plan = read_json(sm.input.plan, "fig2 plan")
    run_spectrum_density(sm.params.cfg, sm.params.spectrum, sm.params.setting, sm.input.data, sm.input.metrics,
                         sm.input.snapshots, plan, sm.output[0], progress=progress)
