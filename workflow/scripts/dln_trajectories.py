"""Rule dln_trajectories: GD trajectories of the two-parameter DLN (fig1) -> NetCDF cube.

``snakemake.params.cfg`` holds ``theta0`` (two floats), ``lrs`` (list) and ``steps`` (int).
"""
import logging

from eosflow.cubes import write_netcdf
from eosflow.dln import simulate
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    cfg = dict(sm.params.cfg)
    log = logging.getLogger("eosflow.dln_trajectories")
    log.info("cfg=%s out=%s", cfg, sm.output[0])
    ds = simulate([float(v) for v in cfg["lrs"]], int(cfg["steps"]), tuple(float(v) for v in cfg["theta0"]))
    log.info("eta_eos=%.7f status=%s", ds.attrs["eta_eos"], ds["status"].values.tolist())
    write_netcdf(ds, sm.output[0], float32=False)
