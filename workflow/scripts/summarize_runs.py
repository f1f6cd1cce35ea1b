"""Aggregate a sweep's run cubes into one summary cube (one row per run)."""
from eosflow.cubes import write_netcdf
from eosflow.logs import rule_logging
from eosflow.summary import summarize_runs

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    write_netcdf(summarize_runs(sm.params.by_setting, sm.params.stability), sm.output[0])
