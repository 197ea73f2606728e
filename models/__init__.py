"""Backbones, fusion modules, heads and the seed systems built from them.

Importing ``models`` imports every module of its subpackages so that their registrations run:
a new model, fusion module, encoder or head is one file in the right folder.
"""
import importlib
import pkgutil

from models.base import SegModel, count_params, param_groups
from models.registry import (
    ENCODERS,
    FUSIONS,
    HEADS,
    PublishedFigures,
    UnknownNameError,
    create_fusion,
    create_model,
    get_family,
    get_published,
    is_model,
    list_fusions,
    list_models,
    list_published,
    list_sizes,
    register_encoder,
    register_fusion,
    register_head,
    register_model,
    register_published,
)

for _pkg in ("backbones", "fusion", "heads", "zoo"):
    _module = importlib.import_module(f"models.{_pkg}")
    for _info in pkgutil.iter_modules(_module.__path__):
        importlib.import_module(f"models.{_pkg}.{_info.name}")

from models.pretrained import load_pretrained  # noqa: E402

__all__ = [
    "FUSIONS", "ENCODERS", "HEADS", "UnknownNameError", "PublishedFigures",
    "create_model", "create_fusion", "list_models", "list_sizes", "list_fusions", "get_family",
    "is_model", "register_model", "register_fusion", "register_encoder", "register_head",
    "register_published", "list_published", "get_published",
    "SegModel", "param_groups", "count_params", "load_pretrained",
]
