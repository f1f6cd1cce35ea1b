"""The benchmark's models and data: the 199k MLP on Fashion-MNIST, the small BatchNorm VGG on
CIFAR-10 (real images from a folder given by ``--cifar10-dir`` or ``data.cifar10_dir``, else
synthetic CIFAR-shaped ones)."""

from __future__ import annotations

import numpy as np
import torch

from ..models import build_model
from ..objective import Objective


class BenchDataError(ValueError):
    """The CIFAR-10 folder the benchmark was told to use cannot serve the VGG workload; the
    message names where the folder came from (the flag or the config key)."""


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
    """``n`` synthetic CIFAR-shaped images (standard normal pixels, labels cycling over 10 classes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10, "synthetic CIFAR-shaped (3x32x32)"


def cifar10_subset(root, n: int, seed: int = 0, origin: str = "--cifar10-dir"):
    """``n`` class-balanced CIFAR-10 training images from the folder ``root`` (torchvision's
    ``cifar-10-batches-py`` or its parent), scaled to [0, 1] and normalised with the subset's
    per-channel mean and std, as :func:`eosflow.data.prepare_dataset` prepares the training data
    of the pipeline's CIFAR setting. Returns ``(x float32 (n, 3, 32, 32), y int64, source)``.
    Any problem raises :class:`BenchDataError` naming ``origin`` (where ``root`` came from)."""
    from ..data import DataError, balanced_subset, load_cifar10

    try:
        x_tr, y_tr, _, _ = load_cifar10(str(root), download=False)
        idx = balanced_subset(y_tr, n, seed)
    except (DataError, ValueError) as e:
        raise BenchDataError(f"{origin} = {root}: cannot give the VGG workload {n} CIFAR-10 training images: {e}. "
                             "Fix or unset it to run on synthetic CIFAR-shaped images") from None
    x = x_tr[idx].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64).reshape(1, -1, 1, 1)
    std = x.std(axis=(0, 2, 3), dtype=np.float64).reshape(1, -1, 1, 1)
    x = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    source = f"cifar10 (real: {root}, {n} class-balanced training images, per-channel normalised)"
    return torch.from_numpy(x), torch.from_numpy(y_tr[idx].astype(np.int64)), source


def build_workload(spec: dict, device: torch.device, data=None):
    """The objective, θ₀ and the ``info`` record of the workload ``spec``; ``data``: ``(x, y,
    source)`` already loaded (the VGG's real CIFAR-10 subset), else the workload's default data."""
    if data is not None:
        x, y, source = data
    elif spec["data"] == "fashion-mnist":
        x, y, source = fashion_mnist_subset(spec["n"])
    else:
        x, y, source = cifar_shaped(spec["n"])
    model = build_model(spec["model"], tuple(x.shape[1:]), 10, seed=0).to(device)
    obj = Objective(model, x.to(device), y.to(device), "ce", chunk_size=spec.get("chunk_size"))
    info = {"model": spec["model"], "n_params": obj.dim, "n_examples": obj.n, "chunk_size": spec.get("chunk_size"),
            "data": source, "data_real": not source.startswith("synthetic"), "loss": "ce", "dtype": "float32",
            "hvp_mode_objective": obj.hvp_mode}
    return obj, obj.flatten(), info
