"""Snakemake script for rule ``prepare_data``: balanced, normalised subset -> ``output[0]``.

``snakemake.params.spec`` holds the keyword arguments of
:func:`eosflow.data.prepare_dataset` except ``out``: dataset, n_train, n_test, seed, root,
download, cache_dir.
"""

import logging

from eosflow.data import prepare_dataset

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
log = logging.getLogger("prepare_data")

spec = dict(snakemake.params.spec)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
log.info("prepare_data spec=%s out=%s", spec, out)
try:
    d = prepare_dataset(**spec, out=out)
except Exception:
    log.exception("prepare_data failed")
    raise
log.info(
    "source=%s x_train=%s x_test=%s mean=%s std=%s",
    d["meta"]["source"],
    tuple(d["x_train"].shape),
    tuple(d["x_test"].shape),
    d["mean"].tolist(),
    d["std"].tolist(),
)
