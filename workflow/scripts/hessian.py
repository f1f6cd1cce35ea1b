"""Rule hessian: top-k Hessian eigenpairs of a run's snapshots, joined with its metrics into the cube."""
from eosflow.logs import rule_logging
from eosflow.pipeline import run_hessian

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    run_hessian(sm.params.cfg, sm.wildcards.setting, sm.input.data, sm.input.metrics, sm.input.snapshots,
                sm.output.cube, progress=progress)
