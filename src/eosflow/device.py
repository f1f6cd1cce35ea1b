"""Choosing the compute device from the config's ``device`` key (the CPU heap settings of the jobs
are :mod:`eosflow.heap`)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU (logged); ``cpu``; ``cuda``: an error if absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.info("device: auto -> cpu (no CUDA device visible)")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("config key device: 'cuda' but no CUDA GPU is visible to torch on this "
                               "machine; use device: auto (falls back to the CPU) or device: cpu")
        return torch.device("cuda")
    raise ValueError(f"config key device: unknown device {name!r}; allowed values: ['auto', 'cpu', 'cuda']")
