"""Rule fig2_vectors: one seed's fig2 baseline eigenvectors at its plan's epochs."""
from eosflow.files import read_json
from eosflow.logs import rule_logging
from eosflow.jobs.hessian import run_hessian

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    steps = read_json(sm.input.plan, "fig2 plan")["vector_steps"]
    run_hessian(sm.params.cfg, sm.params.setting, sm.input.data, sm.input.metrics, sm.input.snapshots, sm.output[0],
                progress=progress, steps=steps)
