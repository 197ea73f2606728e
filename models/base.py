"""The contract every segmentation model in models/ follows, and the optimiser parameter groups.

A model is an ``nn.Module`` with
    forward(inputs: dict[str, Tensor]) -> logits (B, K, H, W) at the input resolution
        ``inputs`` maps modality names to batches: "rgb" (B, C, H, W), "x" (B, C', H, W) for the
        auxiliary image (thermal, depth, SAR, DSM), "text" (B, T) token ids for referring models.
    forward_train(inputs, target, state=None) -> dict of scalar tensors, "loss" the total
        ``state`` carries the training progress (``iteration`` from 0, ``max_iters``,
        ``epoch`` counted from 1 as the upstream training loops count it, ``max_epochs``) for
        losses with a curriculum.
    attributes ``modalities`` (the input keys it reads), ``num_classes``, ``ignore_index``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class SegModel(nn.Module):
    modalities: tuple[str, ...] = ("rgb", "x")
    num_classes: int = 0
    ignore_index: int = 255

    def forward_train(self, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                      state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        logits = self(inputs)
        return {"loss": F.cross_entropy(logits, target, ignore_index=self.ignore_index)}


_DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.modules.instancenorm._InstanceNorm)


def param_groups(model: nn.Module, weight_decay: float, mode: str = "all") -> list[dict]:
    """Optimiser groups: weights of Linear/Conv layers decay; their biases and norm parameters
    do not.

    ``mode="upstream"`` reproduces Sigma's ``group_weight`` (utils/init_func.py): only
    parameters owned by Linear/Conv/Norm modules reach the optimiser, so raw ``nn.Parameter``s
    (SSM ``A_log``, ``D``, ``x_proj_weight``, ``dt_projs_*``, layer scales) never train.
    ``mode="all"`` adds those raw parameters, without weight decay."""
    if mode not in ("all", "upstream"):
        raise ValueError(f"param_groups mode must be 'all' or 'upstream', got {mode!r}")
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        if isinstance(module, _DECAYED):
            decay.append(module.weight)
            seen.add(id(module.weight))
            if module.bias is not None:
                no_decay.append(module.bias)
                seen.add(id(module.bias))
        elif isinstance(module, _NORMS):
            for p in (module.weight, module.bias):
                if p is not None:
                    no_decay.append(p)
                    seen.add(id(p))
    raw = [p for p in model.parameters() if id(p) not in seen]
    if mode == "all":
        no_decay.extend(raw)
    groups = [
        {"params": [p for p in decay if p.requires_grad], "weight_decay": weight_decay},
        {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
