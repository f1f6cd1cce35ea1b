"""Logging for workflow scripts: everything (log records, progress bars, tracebacks) into the
rule's ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def rule_logging(log_path, threads: int | None = None):
    """Send logging to ``log_path`` and yield an open handle for tqdm; log any exception, then re-raise.

    ``threads`` sets torch's intra-op threads to what the rule was given.
    """
    logging.basicConfig(filename=log_path, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    warnings.filterwarnings("default")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    with open(log_path, "a", buffering=1) as progress:
        try:
            yield progress
        except SystemExit:
            raise
        except BaseException:
            logging.getLogger("eosflow").exception("rule failed")
            raise
