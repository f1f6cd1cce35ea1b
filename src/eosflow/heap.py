"""The CPU heap settings under which jobs keep large tensors' memory in the process
(:data:`HEAP_ENV`, :func:`reuse_freed_memory`). No torch: the workflow reads :data:`HEAP_ENV` while
it parses the Snakefile and sets it for every job (``workflow/rules/common.smk``)."""

from __future__ import annotations

import ctypes
import os

__all__ = ["HEAP_ENV", "reuse_freed_memory", "heap_env_applied"]

#: glibc malloc settings under which freed tensor memory is reused instead of being handed back to
#: the OS and faulted in again on the next allocation: blocks up to 32 MiB (the most glibc allows)
#: come from the heap, and the heap is not trimmed. Measured on the benchmark's BatchNorm VGG
#: (5,000 images in chunks of 1,000, top-1 to 1e-3, 2 threads): 37.8 s with them against 65 s
#: without when the R-operator keeps its primal passes, 49.6 s against 51-53 s when it does not;
#: hessian-eigenthings 61 s against 57 s (no gain). The peak memory is the same; the resident
#: memory stays at the peak after it. The workflow sets them for every job (common.smk).
HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Apply :data:`HEAP_ENV` to the running process (glibc ``mallopt``), for what it allocates
    from now on. Returns False where there is no glibc (macOS, Windows, musl): nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(HEAP_ENV["MALLOC_MMAP_THRESHOLD_"]))
    ok &= mallopt(_M_TRIM_THRESHOLD, int(HEAP_ENV["MALLOC_TRIM_THRESHOLD_"]))
    return bool(ok)


def heap_env_applied() -> bool:
    """Whether this process was started with :data:`HEAP_ENV` in its environment."""
    return all(os.environ.get(k) == v for k, v in HEAP_ENV.items())
