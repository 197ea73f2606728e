"""What a cell's configuration builds before it trains: its dataset's info and its model.
Used by training (bench/run/train.py), the preflight (bench/run/preflight.py) and the ``init:``
checks (bench/run/checkpoints.py), which is why it stands apart from the training loop."""
from __future__ import annotations

import torch

import models
from bench.data import build_dataset, get_dataset_class


def dataset_info(config: dict):
    """The dataset's ``info`` (classes, modalities): from the class when it declares one, else
    from an instance (datasets whose modalities depend on their options)."""
    cls = get_dataset_class(config["dataset"]["name"])
    info = getattr(cls, "info", None)
    if info is None:
        info = build_dataset(config["dataset"]["name"], split=config["eval"]["split"],
                             augment=None, **dataset_options(config)).info
    return info


def dataset_options(config: dict) -> dict:
    return {k: v for k, v in config["dataset"].items() if k != "name"}


def build_model(config: dict, info) -> torch.nn.Module:
    return models.create_model(
        config["model"], size=config["size"], fusion=config["fusion"],
        num_classes=1 if info.task == "referring" else info.num_classes,
        modalities=dict(info.modalities), **config["train"].get("model_kwargs", {}))
