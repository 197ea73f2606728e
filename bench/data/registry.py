"""Dataset registry and the sample contract every loader follows.

A dataset is a ``torch.utils.data.Dataset`` registered by name, built with
``build_dataset(name, split=..., root=..., **options)``. Each item is a dict:

    "rgb"    float32 (C_a, H, W), normalised: the primary image (optical bands for remote sensing)
    "x"      float32 (C_b, H, W), normalised: the auxiliary modality (thermal, depth, SAR, DSM)
    "text"   int64 (T,) token ids, referring datasets only (instead of "x")
    "label"  int64 (H, W) class indices, ``info.ignore_index`` where unlabeled
    "name"   str, the sample's stem (for error messages and saved predictions)

and the class carries ``info: DatasetInfo``. Corruptions (robustness sets) are applied in the
raw sensor domain, before normalisation: "x_missing" means the auxiliary sensor read zeros.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from models.errors import UserError


@dataclass
class DatasetInfo:
    name: str
    #: modality name -> channel count, primary first: {"rgb": 3, "x": 1}
    modalities: dict[str, int]
    classes: list[str]
    palette: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_index: int = 255
    #: "semseg" or "referring"
    task: str = "semseg"
    #: what the auxiliary modality measures: thermal, depth, sar, dsm, text
    x_kind: str | None = None
    #: classes scored in the means (None = all); ISPRS papers leave out clutter
    eval_classes: list[int] | None = None
    #: the evaluation protocol the papers use for this dataset (bench/evaluation/protocols.py names)
    protocol: dict = field(default_factory=lambda: {"mode": "whole"})

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class UnknownDatasetError(UserError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_DATASETS: dict[str, Callable] = {}


def register_dataset(name: str):
    def wrap(cls):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        cls.registry_name = name
        _DATASETS[name] = cls
        return cls

    return wrap


def get_dataset_class(name: str):
    if name not in _DATASETS:
        close = difflib.get_close_matches(name, list(_DATASETS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}{hint} (known: {', '.join(sorted(_DATASETS))})")
    return _DATASETS[name]


def build_dataset(name: str, **options):
    return get_dataset_class(name)(**options)


def list_datasets() -> list[str]:
    return sorted(_DATASETS)
