"""Rule hessian: top-k Hessian eigenpairs of a run's snapshots, joined with its metrics into the cube.

params.cfg: the hessian block; the run itself is the record in its metrics."""
from eosflow.jobs.hessian import run_hessian
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    run_hessian(sm.params.cfg, sm.wildcards.setting, sm.input.data, sm.input.metrics, sm.input.snapshots,
                sm.output.cube, progress=progress)
