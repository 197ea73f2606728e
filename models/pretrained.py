"""Loading official checkpoints into ssmbench models.

``load_pretrained(model, path)`` reads a checkpoint (a state dict, or a dict holding one under
"model" / "state_dict"), maps upstream key names through the model's
``checkpoint_filter_fn(state_dict, model)`` when it has one (timm's convention), loads it, and
returns a report of what was loaded, missing, unexpected or mismatched in shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"  missing in checkpoint ({len(self.missing)}): "
                         + ", ".join(self.missing[:8]) + (" ..." if len(self.missing) > 8 else ""))
        if self.unexpected:
            lines.append(f"  not used by the model ({len(self.unexpected)}): "
                         + ", ".join(self.unexpected[:8])
                         + (" ..." if len(self.unexpected) > 8 else ""))
        for key, want, got in self.mismatched[:8]:
            lines.append(f"  shape mismatch {key}: model {want}, checkpoint {got}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


def match_state(own: dict, state: dict, report: "LoadReport") -> dict:
    """The entries of ``state`` that ``own`` has with the same shape; unexpected and mismatched
    keys are recorded in ``report``, loaded ones too."""
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    return usable


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load ``path`` into ``model``; with ``strict`` raise if anything does not match."""
    state = read_state_dict(path)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    report = LoadReport(str(path))
    usable = match_state(own, state, report)
    report.missing = [k for k in own if k not in state]
    if strict and not report.ok:
        raise ValueError("checkpoint does not match the model:\n" + report.summary())
    model.load_state_dict(usable, strict=False)
    return report
