"""Rule layer_spectra: top-k eigenvalues of each layer's diagonal Hessian block at a run's snapshots.

params.cfg: the layers block's measurement keys; the run itself is the record in its cube."""
from eosflow.jobs.layers import run_layer_spectra
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    run_layer_spectra(sm.params.cfg, sm.wildcards.setting, sm.input.data, sm.input.cube, sm.input.snapshots,
                      sm.output.layers, progress=progress)
