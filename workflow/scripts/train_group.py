"""Rule train_group: several full-batch GD runs of one setting in one process (stacked parameters,
vmapped) -> each run's metrics NetCDF + parameter snapshots, as rule train writes them (resumable).

params.specs: the runs' RunSpec records (eosflow.jobs.spec), in the order of the outputs: metrics0,
snapshots0, metrics1, snapshots1, ...
"""
from eosflow.jobs.spec import RunSpec
from eosflow.jobs.train import run_train_group
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0], sm.threads) as progress:
    specs = [RunSpec.from_record(r) for r in sm.params.specs]
    out = list(sm.output)
    if len(out) != 2 * len(specs):
        raise ValueError(f"{len(specs)} runs need {2 * len(specs)} outputs (metrics, snapshots per run); "
                         f"got {len(out)}")
    run_train_group(specs, sm.input.data, list(zip(out[0::2], out[1::2])), checkpoint=sm.params.checkpoint,
                    progress=progress)
