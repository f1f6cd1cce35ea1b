"""Rule train: one full-batch GD run -> metrics NetCDF + parameter snapshots (resumable).

The ``lr`` wildcard is eta_0 (``0.1``) or a multiple of the stability limit (``x0.5``; then
``params.relative`` says of which limit)."""
from eosflow.config import parse_lr_tag
from eosflow.logs import rule_logging
from eosflow.pipeline import run_train

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    w = sm.wildcards
    fork = (sm.input.parent_metrics, sm.input.parent_snapshots) if "parent_snapshots" in sm.input.keys() else None
    lr, _ = parse_lr_tag(w.lr)
    run_train(sm.params.cfg, w.setting, lr, int(w.seed), sm.input.data, sm.output.metrics,
              sm.output.snapshots, checkpoint=sm.params.checkpoint, schedule=sm.params.schedule,
              progress=progress, fork=fork, relative=sm.params.relative)
