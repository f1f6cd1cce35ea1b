"""Rule optimizer_run: one run of another optimizer (minibatch SGD, Adam, RMSprop, Clipped-Ada) -> its
cube with the plain and the preconditioned sharpness (resumable from its checkpoint)."""
from eosflow.jobs.optimizers import run_optimizer
from eosflow.jobs.spec import RunSpec
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    run_optimizer(RunSpec.from_record(sm.params.spec), sm.input.data, sm.output.cube, checkpoint=sm.params.checkpoint,
                  progress=progress)
