"""What a cell's configuration builds before it trains: its dataset's info and its model.
Used by training (bench/run/train.py), the preflight (bench/run/preflight.py) and the ``init:``
checks (bench/run/checkpoints.py), which is why it stands apart from the training loop."""
from __future__ import annotations

import torch

import models
from bench.config.schema import CellConfig
from bench.data import build_dataset, get_dataset_class


def dataset_info(cell: CellConfig):
    """The dataset's ``info`` (classes, modalities): from the class when it declares one, else
    from an instance (datasets whose modalities depend on their options)."""
    cls = get_dataset_class(cell.dataset.name)
    info = getattr(cls, "info", None)
    if info is None:
        info = build_dataset(cell.dataset.name, split=cell.eval.split, augment=None,
                             **cell.dataset.loader_options).info
    return info


def build_model(cell: CellConfig, info) -> torch.nn.Module:
    return models.create_model(
        cell.model, size=cell.size, fusion=cell.fusion,
        num_classes=1 if info.task == "referring" else info.num_classes,
        modalities=dict(info.modalities), **cell.train.model_kwargs)
