"""Rule prepare_data: a deterministic, class-balanced, normalised subset -> ``output[0]``.

``snakemake.params.spec`` holds the keyword arguments of :func:`eosflow.data.prepare_dataset`
except ``out``: dataset, n_train, n_test, seed, root, download, cache_dir. ``dataset`` is a built-in's
name, or a user's dataset as its canonical spec (eosflow.config.datasets.dataset_spec; ``root`` is then
``data.torchvision_dir``).
"""
import logging

from eosflow.data import prepare_dataset
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    log = logging.getLogger("eosflow.prepare_data")
    log.info("spec=%s out=%s", sm.params.spec, sm.output[0])
    d = prepare_dataset(**sm.params.spec, out=sm.output[0])
    log.info("source=%s x_train=%s x_test=%s mean=%s std=%s", d["meta"]["source"], tuple(d["x_train"].shape),
             tuple(d["x_test"].shape), d["mean"].tolist(), d["std"].tolist())
