"""Loading official checkpoints into ssmbench models.

``load_pretrained(model, path)`` reads a checkpoint (a state dict, or a dict holding one under
"model" / "state_dict"), maps upstream key names through the model's
``checkpoint_filter_fn(state_dict, model)`` when it has one (timm's convention), loads it, and
returns a report of what was loaded, missing, unexpected or mismatched in shape.

Reading is safe first: ``.safetensors`` files through safetensors, other files through
``torch.load(weights_only=True)``; a file that pickles Python objects beyond tensors (VMamba's
classification checkpoints keep their yacs config) is loaded with ``weights_only=False`` only
when the caller allows it, and the report says so. A Git-LFS pointer or an HTML page saved in
place of the weights (zifuwan/Sigma issue 48: "invalid load key, 'v'") is recognised by its first
bytes and refused with what to do. DDP's ``module.`` prefix is removed; ``ema=True`` picks the
EMA weights (timm's ``model_ema`` / ``state_dict_ema``, as ReMamber's ``--model-ema`` saves).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from models.errors import UserError

log = logging.getLogger(__name__)

#: where training scripts keep the weights inside a checkpoint dict, in the order tried
STATE_KEYS = ("model", "state_dict", "model_state", "module")
#: where timm-style EMA weights are kept (ReMamber's --model-ema: "model_ema")
EMA_KEYS = ("model_ema", "state_dict_ema", "ema")


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read as weights; the message says what to do."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    #: how the file was read, e.g. "pickled objects: loaded with weights_only=False"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form stored with a cell: the counts and the (first 50) names."""
        return {"path": self.path, "ok": self.ok, "counts": {
                    "loaded": len(self.loaded), "missing": len(self.missing),
                    "unexpected": len(self.unexpected), "mismatched": len(self.mismatched)},
                "missing": self.missing[:50], "unexpected": self.unexpected[:50],
                "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched[:50]],
                "notes": list(self.notes)}

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


def sniff_checkpoint(path: str | Path) -> None:
    """Raise ``CheckpointError`` if ``path`` is missing, empty, a Git-LFS pointer or an HTML
    page (what a failed download or an un-pulled LFS clone leaves in place of the weights)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path} is empty; download it again")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"{path} is a Git-LFS pointer file ({path.stat().st_size} bytes), not the weights: "
            f"run `git lfs pull` in its repository (or download the file itself from the "
            f"release page) and point the suite at the real file")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        raise CheckpointError(
            f"{path} is an HTML page, not the weights: the download returned a web page (a "
            f"login, quota or confirmation page); download the file itself (e.g. with the "
            f"browser, or gdown for Google Drive) and point the suite at it")


def read_checkpoint(path: str | Path, allow_pickle: bool = True,
                    notes: list[str] | None = None):
    """The object stored in ``path`` (safetensors, or torch.load with weights_only first)."""
    path = Path(path)
    sniff_checkpoint(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not allow_pickle:
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, which "
                f"torch.load(weights_only=True) refuses ({first}); if you trust the file, "
                f"allow it (init: allow_pickle: true), or re-save only its state dict") from None
        message = (f"{path} holds pickled Python objects besides tensors; loaded with "
                   f"torch.load(weights_only=False) because the file is trusted")
        log.warning(message)
        if notes is not None:
            notes.append("pickled objects: loaded with weights_only=False")
        return torch.load(path, map_location="cpu", weights_only=False)
    except RuntimeError as exc:  # a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc}); download "
                              f"it again") from None


def select_state(obj, ema: bool = False, path: str = "") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: its EMA weights with ``ema``, else the first
    of ``STATE_KEYS``, else the object itself; DDP's ``module.`` prefix removed."""
    if ema:
        found = [k for k in EMA_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), dict)]
        if not found:
            keys = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, dict) else ""
            raise CheckpointError(f"{path} has no EMA weights (looked for "
                                  f"{', '.join(EMA_KEYS)}; it has {keys}); set ema: false")
        obj = obj[found[0]]
    else:
        for key in STATE_KEYS:
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


def read_state_dict(path: str | Path, ema: bool = False, allow_pickle: bool = True,
                    notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    obj = read_checkpoint(path, allow_pickle, notes)
    return select_state(obj, ema, str(path))


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


def match_model(model: nn.Module, state: dict, path: str = "") -> tuple[dict, LoadReport]:
    """Map ``state`` through the model's ``checkpoint_filter_fn`` and match it against the
    model's own state dict (works on a model built on the meta device too)."""
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    report = LoadReport(str(path))
    usable = match_state(own, state, report)
    report.missing = [k for k in own if k not in state]
    return usable, report


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True, ema: bool = False,
                    allow_pickle: bool = True) -> LoadReport:
    """Load ``path`` into ``model``; with ``strict`` raise if anything does not match."""
    notes: list[str] = []
    state = read_state_dict(path, ema=ema, allow_pickle=allow_pickle, notes=notes)
    usable, report = match_model(model, state, str(path))
    report.notes += notes + (["EMA weights"] if ema else [])
    if strict and not report.ok:
        raise ValueError("checkpoint does not match the model:\n" + report.summary())
    model.load_state_dict(usable, strict=False)
    return report
