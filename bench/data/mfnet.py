"""MFNet RGB-thermal urban scenes (Ha et al. 2017), 9 classes with "unlabeled" trained and scored.

Layouts (``layout=``):

- ``native`` (MFNet / MFNet-pytorch / RTFNet): ``images/<name>.png`` 640x480 RGBA uint8 with the
  thermal image in channel 3, ``labels/<name>.png`` uint8 0..8, split files
  ``train.txt val.txt test.txt test_day.txt test_night.txt`` (RTFNet also ``val_test.txt``) in the
  root, one bare stem (``00001D``, ``01234N``) per line.
- ``sigma`` (Sigma / CMX): ``RGB/<name>.png`` (RGBA channels 0:3), ``Modal/<name>.png`` (channel
  3), ``Label/<name>.png``; ``train2.txt`` (train + val, 1176) and ``test.txt`` (393). Split
  ``train`` reads ``train2.txt`` there, as Sigma's config does. ``ssmbench data convert mfnet``
  writes it from the native layout.

Labels are used as they are (Sigma ``gt_transform=False``): class 0 "unlabeled" is a real class.
Evaluation follows Sigma's config_MFNet: sliding window 480x640 (= the image), stride rate 2/3,
scale 1, no flip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.io import as_grayscale, read_channels, read_image, read_label_image
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_split_file,
    split_files,
)

MFNET_CLASSES = ["unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail",
                 "color_cone", "bump"]
MFNET_PALETTE = [(0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192),
                 (128, 128, 0), (64, 64, 128), (192, 128, 128), (192, 64, 0)]
SIGMA_SLIDE = {"mode": "slide", "crop": [480, 640], "stride_rate": 2 / 3, "windows": "sigma"}


@register_dataset("mfnet")
class MFNetDataset(RGBXFolderDataset):
    info = DatasetInfo(name="mfnet", modalities={"rgb": 3, "x": 1}, classes=MFNET_CLASSES,
                       palette=MFNET_PALETTE, ignore_index=255, x_kind="thermal",
                       protocol=SIGMA_SLIDE)
    layouts = ("native", "sigma")
    layout_markers = {"native": "images/ labels/ train.txt (RGBA PNGs)",
                      "sigma": "RGB/ Modal/ Label/ train2.txt test.txt"}

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "RGB").is_dir() and (root / "Modal").is_dir():
            return "sigma"
        if (root / "images").is_dir():
            return "native"
        return None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "sigma":
            names = split_files(root)
            return ["train" if n == "train2" else n for n in names
                    if not (n == "train" and "train2" in names)]
        return split_files(root)

    def split_file(self, split: str) -> Path:
        if self.layout == "sigma" and split == "train" and (self.root / "train2.txt").is_file():
            return self.root / "train2.txt"
        return self.root / f"{split}.txt"

    split_source = split_file

    def list_entries(self, split: str) -> list[Entry]:
        if self.layout == "native":
            folders = {"image": self.root / "images", "label": self.root / "labels"}
        else:
            folders = {"rgb": self.root / "RGB", "x": self.root / "Modal",
                       "label": self.root / "Label"}
        return entries_from_split_file("MFNet", self.split_file(split), folders,
                                       {role: ".png" for role in folders})

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        label = read_label_image(entry.files["label"])
        if self.layout == "native":
            image = read_channels(entry.files["image"], 4,
                                  "an RGBA PNG (RGB + thermal in channel 3)")
            return {"rgb": image[..., :3], "x": image[..., 3], "label": label}
        rgb = read_image(entry.files["rgb"])
        if rgb.ndim == 3 and rgb.shape[2] == 4:
            rgb = rgb[..., :3]  # an RGBA frame copied whole: cv2 IMREAD_ANYCOLOR drops alpha
        x = as_grayscale(read_image(entry.files["x"]), entry.files["x"])
        return {"rgb": rgb, "x": x, "label": label}
