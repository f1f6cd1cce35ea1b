"""The benchmark's "user model" workload: a small residual CNN with normalisation layers, the kind
of network a researcher brings, fed through a ``DataLoader`` (not one of eosflow's own nets, and
not an ``nn.Sequential``: the R-operator does not apply, :func:`eosflow.spectral.hvp_operator`
picks another product)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "ResidualCNN", "residual_cnn"]


class ResidualBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` (pre-activation), GroupNorm."""

    def __init__(self, width: int, groups: int = 4):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, width), nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        return x + self.conv2(self.act(self.norm2(h)))


class ResidualCNN(nn.Module):
    """Stem convolution (stride 2), ``blocks`` residual blocks, GroupNorm, global average pool,
    Dropout (identity in eval mode, as the Hessian's objective runs it) and a LayerNorm'd linear head."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 16, blocks: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([ResidualBlock(width) for _ in range(blocks)])
        self.norm = nn.GroupNorm(4, width)
        self.drop = nn.Dropout(dropout)
        self.head_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        h = torch.relu(self.norm(h)).mean(dim=(2, 3))
        return self.head(self.head_norm(self.drop(h)))


def residual_cnn(in_channels: int = 1, n_classes: int = 10, width: int = 16, blocks: int = 2, seed: int = 0) -> ResidualCNN:
    """The workload's network, initialised under ``seed`` (PyTorch's default initialisation)."""
    g = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return ResidualCNN(in_channels, n_classes, width, blocks)
    finally:
        torch.random.set_rng_state(g)
