"""The benchmark's models and data: the 199k MLP on Fashion-MNIST, the small BatchNorm VGG on
CIFAR-shaped images."""

from __future__ import annotations

import numpy as np
import torch

from ..models import build_model
from ..objective import Objective


def fashion_mnist_subset(n: int, seed: int = 0):
    """``n`` class-balanced Fashion-MNIST training images (normalised), or synthetic ones of that
    shape when no copy is on disk. Returns ``(x, y, source)``."""
    from ..data import DataError, balanced_subset, load_fashion_mnist

    try:
        x_tr, y_tr, _, _ = load_fashion_mnist(download=False)
    except (DataError, OSError) as e:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10, f"synthetic ({e.__class__.__name__})"
    idx = balanced_subset(y_tr, n, seed)
    x = torch.from_numpy(x_tr[idx].astype(np.float32) / 255.0)[:, None]
    x = (x - x.mean()) / x.std()
    return x, torch.from_numpy(y_tr[idx].astype(np.int64)), "fashion-mnist (disk)"


def cifar_shaped(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10, "synthetic CIFAR-shaped (3x32x32)"


def build_workload(spec: dict, device: torch.device):
    if spec["data"] == "fashion-mnist":
        x, y, source = fashion_mnist_subset(spec["n"])
        shape = (1, 28, 28)
    else:
        x, y, source = cifar_shaped(spec["n"])
        shape = (3, 32, 32)
    model = build_model(spec["model"], shape, 10, seed=0).to(device)
    obj = Objective(model, x.to(device), y.to(device), "ce", chunk_size=spec.get("chunk_size"))
    info = {"model": spec["model"], "n_params": obj.dim, "n_examples": obj.n, "chunk_size": spec.get("chunk_size"),
            "data": source, "loss": "ce", "dtype": "float32", "hvp_mode_objective": obj.hvp_mode}
    return obj, obj.flatten(), info
