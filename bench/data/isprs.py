"""ISPRS Vaihingen and Potsdam (6 classes) in mmseg's crop layout, with DSM crops.

Layout (``layout="mmseg"``; ``ssmbench data convert vaihingen|potsdam`` writes it from the
raw ISPRS downloads):

    img_dir/{train,val,test}/<crop>.png   Vaihingen IRRG / Potsdam RGB, uint8
    ann_dir/{train,val,test}/<crop>.png   uint8: 0 = undefined (black), 1 impervious, 2 building,
                                          3 low vegetation, 4 tree, 5 car, 6 clutter
    dsm_dir/{train,val,test}/<crop>.png   our convention (mmseg has no DSM): the DSM (Vaihingen)
                                          or nDSM (Potsdam) min-max scaled per tile to [0, 1],
                                          stored as 16-bit (or 8-bit) PNG with the crop's name

Crop names follow mmseg's converters: ``area1_0_0_512_512.png`` and ``2_10_0_0_512_512.png``.
Labels use mmseg's ``reduce_zero_label=True`` (0 -> 255 ignore, 1..6 -> 0..5), so the black
"undefined" / eroded-boundary pixels are ignored. ``with_dsm=False`` drops the DSM (RGB-only
models: Samba's ISPRS configs).

Statistics follow MS2MNet (SSRS lineage): image / 255 with no mean/std, DSM in [0, 1] as is.
Evaluation follows MS2MNet's ``test``: 256x256 windows with stride 32 (Vaihingen) or 64
(Potsdam), laid out as SSRS ``sliding_window`` does (edge windows repeated), logits summed,
argmax; mIoU and mF1 over the first 5 classes (clutter left out: ``eval_classes``). MS2MNet
slides over whole tiles; ``convert --clip-size 0`` writes whole tiles to reproduce that exactly.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.data.io import DataError, read_image, read_label_image
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_folders,
    reduce_zero_label,
    split_folders,
)

ISPRS_CLASSES = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
ISPRS_PALETTE = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0),
                 (255, 0, 0)]


def ms2mnet_slide(stride: int) -> dict:
    return {"mode": "slide", "crop": [256, 256], "stride": [stride, stride], "windows": "ssrs",
            "score": "logits", "average": False}


def read_dsm(path: Path) -> np.ndarray:
    """DSM crop -> float32 in [0, 1] (8- or 16-bit PNG scaled by its full scale)."""
    dsm = read_image(path)
    if dsm.ndim == 3:
        raise DataError(f"DSM has {dsm.shape[2]} channels, expected 1", path,
                        kind="wrong channel count")
    if dsm.dtype.kind not in "u":
        raise DataError(f"DSM PNG must be 8- or 16-bit unsigned, got {dsm.dtype}", path,
                        kind="bad format")
    return dsm.astype(np.float32) / np.iinfo(dsm.dtype).max


class _ISPRSDataset(RGBXFolderDataset):
    layouts = ("mmseg",)
    layout_markers = {"mmseg": "img_dir/<split>/ ann_dir/<split>/ [dsm_dir/<split>/]"}
    norm = {"rgb": ((0.0,), (255.0,)), "x": ((0.0,), (1.0,))}
    eight_bit = ("rgb",)  # the DSM / nDSM is float or 16-bit
    full_scale = {"x": 1.0}

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, with_dsm: bool = True, **options):
        self.with_dsm = bool(with_dsm)
        super().__init__(root, split, augment, corruption, layout, **options)

    def make_info(self) -> DatasetInfo:
        info = super().make_info()
        if not self.with_dsm:
            info = dataclasses.replace(info, modalities={"rgb": 3}, x_kind=None)
        return info

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        return "mmseg" if (root / "img_dir").is_dir() and (root / "ann_dir").is_dir() else None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        return split_folders(root / "ann_dir")

    def split_source(self, split: str) -> Path:
        return self.root / "img_dir" / split

    def list_entries(self, split: str) -> list[Entry]:
        folders = {"rgb": self.root / "img_dir" / split, "label": self.root / "ann_dir" / split}
        if self.with_dsm:
            dsm_dir = self.root / "dsm_dir" / split
            if not dsm_dir.is_dir():
                raise DataError("DSM folder not found; write it with `ssmbench data convert "
                                f"{self.info.name} RAW OUT` or pass with_dsm: false",
                                dsm_dir, kind="missing file")
            folders["x"] = dsm_dir
        return entries_from_folders(self.info.name, folders, dict.fromkeys(folders, ".png"))

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        arrays = {"rgb": read_image(entry.files["rgb"]),
                  "label": read_label_image(entry.files["label"])}
        if self.with_dsm:
            arrays["x"] = read_dsm(entry.files["x"])
        return arrays

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        return reduce_zero_label(raw)


@register_dataset("vaihingen")
class VaihingenDataset(_ISPRSDataset):
    info = DatasetInfo(name="vaihingen", modalities={"rgb": 3, "x": 1}, classes=ISPRS_CLASSES,
                       palette=ISPRS_PALETTE, ignore_index=255, x_kind="dsm",
                       eval_classes=[0, 1, 2, 3, 4], protocol=ms2mnet_slide(32))


@register_dataset("potsdam")
class PotsdamDataset(_ISPRSDataset):
    info = DatasetInfo(name="potsdam", modalities={"rgb": 3, "x": 1}, classes=ISPRS_CLASSES,
                       palette=ISPRS_PALETTE, ignore_index=255, x_kind="dsm",
                       eval_classes=[0, 1, 2, 3, 4], protocol=ms2mnet_slide(64))
