"""The transformer MLP branch."""
from __future__ import annotations

import torch
import torch.nn as nn


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (VMamba v2's MLP branch and Mamba-Diffusion's fusion blocks; key names
    fc1 / fc2)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
