"""Dataset registry: native-layout loaders, SynRGBX, transforms, corruptions and checks.

Importing ``bench.data`` imports every module in this folder so that registrations run.
"""
import importlib
import pkgutil

from bench.data.registry import (
    DatasetInfo,
    UnknownDatasetError,
    build_dataset,
    get_dataset_class,
    list_datasets,
    register_dataset,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["DatasetInfo", "UnknownDatasetError", "build_dataset", "get_dataset_class",
           "list_datasets", "register_dataset"]
