"""Rule optimizer_run: one run of another optimizer (minibatch SGD, Adam, RMSprop, Clipped-Ada) -> its
cube with the plain and the preconditioned sharpness (resumable from its checkpoint)."""
from eosflow.logs import rule_logging
from eosflow.optimizer_runs import run_optimizer

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    w = sm.wildcards
    run_optimizer(sm.params.cfg, w.optfig, w.setting, w.opt, float(w.lr), int(w.seed), sm.input.data,
                  sm.output.cube, checkpoint=sm.params.checkpoint, progress=progress)
