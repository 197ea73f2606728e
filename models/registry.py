"""Registries for models, fusion modules, encoders and heads, in the manner of timm's
``_registry.py``: a decorated builder per entry, looked up by name.

Models are registered one builder per size, ``@register_model`` on a function named
``<family>_<size>`` (``sigma_tiny``); suites address them as family x size, so
``create_model("sigma", size="tiny")`` and ``create_model("sigma_tiny")`` build the same thing.

Fusion modules, encoders and heads are registered by class under a short name. A new fusion
module is one file in ``models/fusion/`` with one ``@register_fusion("name")``; every model that
composes its encoder and head through ``models.encdec.FusionSegmenter`` can use it at once.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from models.errors import UserError


class UnknownNameError(UserError, KeyError):
    """An unknown registry name; the message carries a "did you mean" suggestion."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _unknown(kind: str, name: str, known: list[str]) -> UnknownNameError:
    return UnknownNameError(
        f"unknown {kind} {name!r}{suggest(name, known)} (known: {', '.join(sorted(known))})"
    )


# ----------------------------------------------------------------------------- models


@dataclass
class ModelFamily:
    name: str
    sizes: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: the fusion the paper uses; ``fusion="default"`` in a suite means this
    default_fusion: str | None = None
    #: modality kinds the family accepts: "rgbx" (image + auxiliary image) or "text"
    task: str = "rgbx"


_MODELS: dict[str, ModelFamily] = {}


def register_model(fn: Callable | None = None, *, family: str | None = None,
                   size: str | None = None, default_fusion: str | None = None,
                   task: str = "rgbx"):
    """Register a builder ``fn(**kwargs) -> nn.Module`` for one size of one family.

    Without ``family``/``size`` the function name is split at its last underscore."""

    def wrap(f: Callable) -> Callable:
        fam, sz = family, size
        if fam is None or sz is None:
            head, _, tail = f.__name__.rpartition("_")
            fam, sz = fam or head, sz or tail
        entry = _MODELS.setdefault(fam, ModelFamily(fam))
        if sz in entry.sizes:
            raise ValueError(f"model {fam}_{sz} registered twice")
        entry.sizes[sz] = f
        entry.task = task
        if default_fusion is not None:
            entry.default_fusion = default_fusion
        return f

    return wrap(fn) if fn is not None else wrap


def _split_name(name: str, size: str | None) -> tuple[str, str]:
    if size is not None:
        return name, size
    if name in _MODELS:
        raise UnknownNameError(
            f"model {name!r} needs a size (one of: {', '.join(_MODELS[name].sizes)})")
    head, _, tail = name.rpartition("_")
    return head, tail


def get_family(name: str) -> ModelFamily:
    if name not in _MODELS:
        raise _unknown("model", name, list(_MODELS))
    return _MODELS[name]


def create_model(name: str, size: str | None = None, **kwargs):
    """Build a registered model: ``create_model("sigma", size="tiny", fusion="add",
    num_classes=9, modalities={"rgb": 3, "x": 1})``."""
    family, sz = _split_name(name, size)
    entry = get_family(family)
    if sz not in entry.sizes:
        raise _unknown(f"size of model {family!r}", sz, list(entry.sizes))
    if kwargs.get("fusion") == "default":
        kwargs["fusion"] = entry.default_fusion
    return entry.sizes[sz](**kwargs)


def list_models() -> list[str]:
    return sorted(_MODELS)


def list_sizes(family: str) -> list[str]:
    return list(get_family(family).sizes)


def is_model(name: str, size: str | None = None) -> bool:
    try:
        family, sz = _split_name(name, size)
    except UnknownNameError:
        return False
    return family in _MODELS and sz in _MODELS[family].sizes


# ----------------------------------------------------------------------------- components


class ComponentRegistry:
    """Name -> class registry for fusion modules, encoders and heads."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type] = {}

    def register(self, name: str):
        def wrap(cls):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.registry_name = name
            self._entries[name] = cls
            return cls

        return wrap

    def get(self, name: str) -> type:
        if name not in self._entries:
            raise _unknown(self.kind, name, list(self._entries))
        return self._entries[name]

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


FUSIONS = ComponentRegistry("fusion")
ENCODERS = ComponentRegistry("encoder")
HEADS = ComponentRegistry("head")

register_fusion = FUSIONS.register
register_encoder = ENCODERS.register
register_head = HEADS.register


def create_fusion(name: str, channels: list[int], **kwargs):
    """Build fusion module ``name`` for encoder stages with ``channels`` (one per stage)."""
    return FUSIONS.create(name, channels, **kwargs)


def list_fusions() -> list[str]:
    return FUSIONS.names()
