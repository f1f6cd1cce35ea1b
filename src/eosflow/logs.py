"""Logging for workflow scripts: everything (log records, progress bars, tracebacks) into the
rule's ``log:`` file; problems a user fixes (a damaged or missing input, a full disk, bad data or
config) end the job with one clear message instead of a traceback."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings


def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .data import DataError
    from .files import DiskFull, UnreadableFile

    return UnreadableFile, DiskFull, DataError, ConfigError


@contextlib.contextmanager
def rule_logging(log_path, threads: int | None = None):
    """Send logging to ``log_path`` and yield an open handle for tqdm; log any exception, then re-raise.

    ``threads`` sets torch's intra-op threads to what the rule was given. An error of
    :func:`_user_errors`'s kinds is logged and printed to stderr as ``eosflow: <message>`` and the
    job exits with status 1 (no traceback: the message names the file and the fix).
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
        except _user_errors() as e:
            logging.getLogger("eosflow").error("rule failed: %s", e)
            print(f"eosflow: {e} (log: {log_path})", file=sys.stderr)
            raise SystemExit(1) from None
        except BaseException:
            logging.getLogger("eosflow").exception("rule failed")
            raise
