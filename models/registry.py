"""Registries for models, fusion modules, encoders and heads, in the manner of timm's
``_registry.py``: a decorated builder per entry, looked up by name.

Models are registered one builder per size, ``@register_model`` on a function named
``<family>_<size>`` (``sigma_tiny``); suites address them as family x size, so
``create_model("sigma", size="tiny")`` and ``create_model("sigma_tiny")`` build the same thing.

A builder's published figures are registered beside it, as timm's ``default_cfgs``:
``@register_model(published=PublishedFigures(...))``, or ``@register_published(...)`` for a
builder outside the model registry (an image classifier, a backbone alone). The model-zoo
report (``bench.reporting.zoo_report``) builds its table from ``list_published()``.

Fusion modules, encoders and heads are registered by class under a short name. A new fusion
module is one file in ``models/fusion/`` with one ``@register_fusion("name")``; every model that
composes its encoder and head through ``models.encdec.FusionSegmenter`` can use it at once.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
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


# ----------------------------------------------------------------------------- published


@dataclass(frozen=True)
class PublishedFigures:
    """What a paper or release publishes about one system, and how to measure ours alike.

    ``inputs`` (input name -> shape, batch included) is the published measurement's input; a
    system without one (accuracy figures only) is no row of the model-zoo report. ``params_m``
    is in millions, ``gmacs`` maps a FLOP convention (kernels/flops.py) to GMACs; ``extra``
    holds any other published figure (accuracy, the parts' parameter counts) for the tests.
    ``builder`` is filled in at registration: the registered model's name, or
    ``"module:function"``."""

    system: str
    builder: str = ""
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params_m: float | None = None
    gmacs: dict[str, float] = field(default_factory=dict)
    #: keyword arguments of the builder for the published configuration (e.g. the classes)
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    #: relative tolerances (parameters, FLOPs)
    tol_params: float = 1e-3
    tol_flops: float = 1e-2
    #: parameter-name prefixes not counted: training-only parts (auxiliary heads) that the
    #: published inference counts leave out
    exclude_params: tuple[str, ...] = ()
    #: module name -> parameter-name prefixes of modules the upstream code uses but never
    #: defines, so ours are reconstructions (counted in the row, and named beside it)
    reconstructed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def input_text(self) -> str:
        return " + ".join("×".join(str(s) for s in shape[1:]) for shape in self.inputs.values())


_PUBLISHED: dict[str, PublishedFigures] = {}


def _add_published(figures: PublishedFigures, builder: str) -> PublishedFigures:
    if figures.system in _PUBLISHED:
        raise ValueError(f"published figures of {figures.system!r} registered twice")
    figures = replace(figures, builder=builder)
    _PUBLISHED[figures.system] = figures
    return figures


def register_published(figures: PublishedFigures):
    """Register the published figures of a builder outside the model registry (called as
    ``module:function``); a registered model takes them as ``register_model(published=)``."""

    def wrap(f: Callable) -> Callable:
        _add_published(figures, f"{f.__module__}:{f.__name__}")
        return f

    return wrap


def list_published() -> list[PublishedFigures]:
    """Every system's published figures, in registration order (models/ is imported folder by
    folder, each folder's files in name order)."""
    return list(_PUBLISHED.values())


def get_published(system: str) -> PublishedFigures:
    if system not in _PUBLISHED:
        raise _unknown("system", system, list(_PUBLISHED))
    return _PUBLISHED[system]


# ----------------------------------------------------------------------------- models


@dataclass
class ModelFamily:
    name: str
    sizes: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: the fusion the paper uses; ``fusion="default"`` in a suite means this
    default_fusion: str | None = None
    #: modality kinds the family accepts: "rgbx" (image + auxiliary image) or "text"
    task: str = "rgbx"
    #: size -> the figures its paper publishes (``register_model(published=)``)
    published: dict[str, PublishedFigures] = field(default_factory=dict)


_MODELS: dict[str, ModelFamily] = {}


def register_model(fn: Callable | None = None, *, family: str | None = None,
                   size: str | None = None, default_fusion: str | None = None,
                   task: str = "rgbx", published: PublishedFigures | None = None):
    """Register a builder ``fn(**kwargs) -> nn.Module`` for one size of one family, with the
    figures its paper publishes for that size (``published``), if any.

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
        if published is not None:
            entry.published[sz] = _add_published(published, f"{fam}_{sz}")
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
