"""Robustness sets: corruptions of one modality, applied in the raw sensor domain.

A corruption is named by a string, as in a suite's ``eval.corruptions`` list:

    "clean" / None    nothing changes
    "x_missing"       the auxiliary sensor reads zeros (X all 0 before normalisation)
    "rgb_missing"     the primary camera reads zeros
    "misreg:S"        X shifted by S pixels in a random direction, zero fill; the direction is
                      drawn from (seed, sample index), so every model sees the same shift
    "noise:SIGMA"     Gaussian sensor noise on every image modality, std SIGMA x full scale
    "noise_rgb:SIGMA", "noise_x:SIGMA"   the same on one modality only

Each runs before normalisation on the decoded arrays (H, W, C), so "x_missing" on MFNet means the
thermal camera delivered 0 DN, exactly what a dead sensor gives. Noise scales with the modality's
full scale: 255 for 8-bit, 65535 for 16-bit, the ``full_scale`` a loader passes for float data
(else the sample's own value range), and integer data is clipped to [0, full scale]. Results are
deterministic per (name, seed, index). Other modules add kinds with ``register_corruption`` (the
synthetic datasets add "night").
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.errors import UserError

IMAGE_MODALITIES = ("rgb", "x")


class UnknownCorruptionError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Corruption:
    kind: str
    param: float | None = None

    @property
    def name(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"

    @property
    def is_clean(self) -> bool:
        return self.kind == "clean"


@dataclass(frozen=True)
class _Kind:
    apply: Callable[[dict, float | None, np.random.Generator, dict], dict]
    parameter: str | None  # the parameter's name, or None for kinds without one
    needs: tuple[str, ...]  # modalities the sample must have


_KINDS: dict[str, _Kind] = {}


def register_corruption(kind: str, parameter: str | None = None,
                        needs: tuple[str, ...] = ()):
    """Register ``fn(sample_raw, param, rng, full_scale) -> sample_raw`` as ``kind[:param]``."""
    def wrap(fn):
        if kind in _KINDS:
            raise ValueError(f"corruption {kind!r} registered twice")
        _KINDS[kind] = _Kind(fn, parameter, needs)
        return fn
    return wrap


def known_corruptions() -> list[str]:
    return [k if spec.parameter is None else f"{k}:{spec.parameter}"
            for k, spec in sorted(_KINDS.items())]


def parse_corruption(name: str | None) -> Corruption:
    """``"misreg:4"`` -> Corruption("misreg", 4.0); unknown names list the known ones."""
    if name is None or (isinstance(name, str) and name.strip() in ("", "clean")):
        return Corruption("clean")
    if isinstance(name, Corruption):
        return name
    if not isinstance(name, str):
        raise UnknownCorruptionError(f"corruption must be a string, got {name!r}")
    kind, _, raw_param = name.strip().partition(":")
    known = ", ".join(known_corruptions())
    if kind not in _KINDS:
        raise UnknownCorruptionError(f"unknown corruption {name!r} (known: {known})")
    spec = _KINDS[kind]
    if spec.parameter is None:
        if raw_param:
            raise UnknownCorruptionError(f"corruption {kind!r} takes no parameter, got {name!r}")
        return Corruption(kind)
    try:
        param = float(raw_param)
    except ValueError:
        raise UnknownCorruptionError(
            f"corruption {name!r} needs a number: write {kind}:{spec.parameter}, "
            f"e.g. {kind}:4") from None
    if not math.isfinite(param) or param < 0:
        raise UnknownCorruptionError(f"corruption {name!r}: {spec.parameter} must be >= 0")
    return Corruption(kind, param)


def check_applicable(name, modalities) -> Corruption:
    """Parse ``name`` and check that a dataset with ``modalities`` can take it."""
    corruption = parse_corruption(name)
    if not corruption.is_clean:
        missing = [m for m in _KINDS[corruption.kind].needs if m not in modalities]
        if missing:
            raise UnknownCorruptionError(
                f"corruption {corruption.name!r} needs modality {missing[0]!r}, which this "
                f"dataset does not have (modalities: {', '.join(modalities)})")
    return corruption


def apply_corruption(sample_raw: dict[str, np.ndarray], name, index: int, seed: int = 0,
                     full_scale: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Corrupt the raw (H, W, C) arrays of one sample; other keys (label, text) pass through."""
    corruption = parse_corruption(name)
    if corruption.is_clean:
        return dict(sample_raw)
    spec = _KINDS[corruption.kind]
    missing = [m for m in spec.needs if m not in sample_raw]
    if missing:
        raise UnknownCorruptionError(
            f"corruption {corruption.name!r} needs modality {missing[0]!r}; the sample has "
            f"{', '.join(sorted(sample_raw))}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index, zlib.crc32(corruption.kind.encode())])
    return spec.apply(dict(sample_raw), corruption.param, rng, full_scale or {})


def modality_full_scale(array: np.ndarray, given: float | None = None) -> float:
    if given is not None:
        return float(given)
    if array.dtype == np.bool_:
        return 1.0
    if array.dtype.kind in "ui":
        return float(np.iinfo(array.dtype).max)
    finite = array[np.isfinite(array)]
    return float(finite.max() - finite.min()) if finite.size else 1.0


def shift_with_zero_fill(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y + dy, x + dx] = array[y, x]; pixels shifted in from outside are 0."""
    out = np.zeros_like(array)
    h, w = array.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = array[src_y, src_x]
    return out


def misregistration_offset(shift: float, rng: np.random.Generator) -> tuple[int, int]:
    """(dy, dx) of length ~``shift`` in a uniformly random direction, rounded to whole pixels."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return int(round(shift * math.sin(angle))), int(round(shift * math.cos(angle)))


@register_corruption("clean")
def _clean(sample, param, rng, full_scale):
    return sample


@register_corruption("x_missing", needs=("x",))
def _x_missing(sample, param, rng, full_scale):
    sample["x"] = np.zeros_like(sample["x"])
    return sample


@register_corruption("rgb_missing", needs=("rgb",))
def _rgb_missing(sample, param, rng, full_scale):
    sample["rgb"] = np.zeros_like(sample["rgb"])
    return sample


@register_corruption("misreg", parameter="S", needs=("x",))
def _misregistration(sample, shift, rng, full_scale):
    dy, dx = misregistration_offset(shift, rng)
    sample["x"] = shift_with_zero_fill(sample["x"], dy, dx)
    return sample


def _add_noise(sample, modalities, sigma, rng, full_scale):
    for modality in modalities:
        if modality not in sample:
            continue
        array = sample[modality]
        scale = modality_full_scale(array, full_scale.get(modality))
        noisy = array.astype(np.float32) + rng.normal(0.0, sigma * scale, array.shape).astype(
            np.float32)
        if array.dtype.kind in "uib":
            noisy = np.clip(noisy, 0.0, scale)
        sample[modality] = noisy
    return sample


@register_corruption("noise", parameter="SIGMA")
def _noise(sample, sigma, rng, full_scale):
    return _add_noise(sample, IMAGE_MODALITIES, sigma, rng, full_scale)


@register_corruption("noise_rgb", parameter="SIGMA", needs=("rgb",))
def _noise_rgb(sample, sigma, rng, full_scale):
    return _add_noise(sample, ("rgb",), sigma, rng, full_scale)


@register_corruption("noise_x", parameter="SIGMA", needs=("x",))
def _noise_x(sample, sigma, rng, full_scale):
    return _add_noise(sample, ("x",), sigma, rng, full_scale)
