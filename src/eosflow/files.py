"""Files in and out: atomic writes that name a full disk, and reads that never run code and name
a damaged file.

Every output is written to a temporary name beside its target and ``os.replace``d, so a reader
never sees a half-written file and a killed job leaves none. A write that fails because the disk
is full raises :class:`DiskFull` ("no space left on device while writing PATH"), whatever the
writer's own error was (torch and netCDF report it in their own words, or not at all). Reads of
torch files use ``weights_only=True`` (tensors and plain values: no code runs); a file that
cannot be read raises :class:`UnreadableFile` naming it and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["UnreadableFile", "DiskFull", "atomic_path", "save_torch", "load_torch", "write_json", "read_json"]

#: Free space (bytes) under which a failed write is taken for a full disk.
LOW_SPACE = 1 << 20


class UnreadableFile(ValueError):
    """An input file that is missing, truncated, damaged or of the wrong kind; the message names
    the file and what to do (usually: delete it and rerun Snakemake, which rebuilds it)."""


class DiskFull(OSError):
    """No space left on the device while writing an output (errno ENOSPC)."""

    def __init__(self, path: Path, folder: Path):
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; nothing was written "
                                       f"there (an earlier file, if any, is unchanged). Free space on the file "
                                       f"system of {folder} and rerun")
        self.path = path


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC anywhere in the exception's chain, or
    (for writers that report it in their own words, e.g. netCDF's "HDF error") almost no free
    space left on the folder's file system."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path in the target's folder; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    reader never sees a half-written file; a full disk is raised as :class:`DiskFull`. Temporary
    files of earlier writes of ``path`` that were killed (SIGKILL leaves them) are removed first:
    one job writes a target at a time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(path, path.parent) from e
        raise
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and _disk_full(e, path.parent)  # before the space is freed
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full and not isinstance(e, DiskFull):
            raise DiskFull(path, path.parent) from e
        raise


def save_torch(obj, path) -> None:
    """``torch.save`` atomically. Written through a file object, so the archive's inner folder is
    torch's fixed ``archive`` rather than the temporary file's random name: the same content gives
    the same bytes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path, what: str = "file", map_location="cpu"):
    """A file written by :func:`save_torch`, read with ``weights_only=True`` (tensors and plain
    values only; anything else is refused, so reading runs no code). ``what`` names the file's
    role in errors (e.g. ``"run snapshots"``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{what} {path} does not exist; rerun snakemake to build it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UnreadableFile(f"{what} {path} cannot be read ({type(e).__name__}: {str(e)[:200]}): it is truncated, "
                             f"damaged or not eosflow's; delete it and rerun snakemake, which rebuilds it") from None


def json_safe(x):
    """NaN/inf as null, tuples as lists: a JSON file stays strict JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(obj, path) -> None:
    """Write pretty JSON atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path, what: str = "file"):
    """The JSON in ``path``; a missing or damaged file is an :class:`UnreadableFile`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UnreadableFile(f"{what} {path} does not exist; rerun snakemake to build it") from None
    except (OSError, ValueError) as e:
        raise UnreadableFile(f"{what} {path} cannot be read ({e}); delete it and rerun snakemake, which "
                             "rebuilds it") from None
