"""Rule train_group: several full-batch GD runs of one setting in one process (stacked parameters,
vmapped) -> each run's metrics NetCDF + parameter snapshots, as rule train writes them (resumable).

params.runs: [[lr_tag, seed, sched_tag], ...] (lr_tag: eta_0, or ``x<multiple>`` of the stability limit
given by params.relative); output: metrics0, snapshots0, metrics1, snapshots1, ...
"""
from eosflow.config import parse_lr_tag
from eosflow.logs import rule_logging
from eosflow.pipeline import run_train_group
from eosflow.training import schedule_from_tag

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    runs = [(parse_lr_tag(lr)[0], int(seed), schedule_from_tag(tag)) for lr, seed, tag in sm.params.runs]
    out = list(sm.output)
    if len(out) != 2 * len(runs):
        raise ValueError(f"{len(runs)} runs need {2 * len(runs)} outputs (metrics, snapshots per run); got {len(out)}")
    run_train_group(sm.params.cfg, sm.wildcards.setting, runs, sm.input.data, list(zip(out[0::2], out[1::2])),
                    checkpoint=sm.params.checkpoint, progress=progress, relative=sm.params.relative)
