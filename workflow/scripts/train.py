"""Rule train: one full-batch GD run -> metrics NetCDF + parameter snapshots (resumable).

params.spec: the run's RunSpec record (eosflow.jobs.spec); a relative eta_0 (``lrx0.5``) is placed
by the job. fig2's branch runs get their parent's files as inputs and start from its snapshot."""
from eosflow.jobs.spec import RunSpec
from eosflow.jobs.train import run_train
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    fork = (sm.input.parent_metrics, sm.input.parent_snapshots) if "parent_snapshots" in sm.input.keys() else None
    run_train(RunSpec.from_record(sm.params.spec), sm.input.data, sm.output.metrics, sm.output.snapshots,
              checkpoint=sm.params.checkpoint, progress=progress, fork=fork)
