"""NYU Depth V2 (40 classes) and SUN RGB-D (37 classes) RGB-D indoor scenes, as Sigma reads them.

Both come as DFormer's release (which Sigma also uses) with two split-file syntaxes:

- ``dformer``: ``RGB/<n>.jpg``, ``Depth/<n>.png``, ``Label/<n>.png`` (SUN: ``labels/``) with
  ``train.txt`` / ``test.txt`` lines ``RGB/2.jpg Label/2.png``.
- ``sigma``: NYU the same folders with ``train2.txt`` / ``test2.txt`` of bare stems; SUN
  ``RGB_resize/ Depth_resize/ labels_resize/`` (640x480) with ``train2.txt`` / ``test2.txt``.
  Split ``train`` reads ``train2.txt``, ``test`` ``test2.txt``.

Stems are whatever the split files list (NYU stems are integers; 0- or 1-based is not assumed).
Depth is read as Sigma's ``cv2.imread(p, IMREAD_GRAYSCALE)`` does: DFormer's 8-bit RGBA
``plt.imsave(cmap='Greys_r')`` PNGs give their grey value, and a 16-bit PNG is reduced to 8 bits
(value / 256) as OpenCV does without ``IMREAD_ANYDEPTH``. Labels are uint8 with 0 = void; Sigma's
``gt_transform=True`` computes ``gt - 1`` in uint8, so void wraps to 255 (ignored) and 1..K become
0..K-1. Evaluation: Sigma's sliding window 480x640, stride rate 2/3, scales 0.75/1/1.25 + flip
(config_nyu / config_sunrgbd).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.io import as_grayscale, read_image, read_label_image
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_split_file,
    split_files,
    uint8_minus_one,
)

NYU_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop"]
SUN_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor_mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel",
    "shower_curtain", "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp",
    "bathtub", "bag"]
SIGMA_MS_FLIP = {"mode": "slide", "crop": [480, 640], "stride_rate": 2 / 3, "windows": "sigma",
                 "scales": [0.75, 1.0, 1.25], "flip": True}


def voc_palette(count: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved colour map (index bits spread over R, G, B, MSB first)."""
    palette = []
    for index in range(count):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette.append((r, g, b))
    return palette


def read_depth_like_cv2_grayscale(path: Path) -> np.ndarray:
    depth = as_grayscale(read_image(path), path)
    if depth.dtype == np.uint16:
        depth = (depth >> 8).astype(np.uint8)  # cv2 IMREAD_GRAYSCALE without ANYDEPTH: 16 -> 8 bit
    return depth


class _IndoorRGBD(RGBXFolderDataset):
    """Shared reader; subclasses give the folder names of each layout."""
    layouts = ("dformer", "sigma")
    folders: dict[str, dict[str, str]]
    suffixes = {"rgb": ".jpg", "x": ".png", "label": ".png"}

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "sigma":
            return [n[:-1] for n in split_files(root) if n.endswith("2")]
        return [n for n in split_files(root) if not n.endswith("2")]

    def split_source(self, split: str) -> Path:
        return self.root / (f"{split}2.txt" if self.layout == "sigma" else f"{split}.txt")

    def list_entries(self, split: str) -> list[Entry]:
        folders = {role: self.root / name for role, name in self.folders[self.layout].items()}
        return entries_from_split_file(self.info.name, self.split_source(split), folders,
                                       self.suffixes)

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        return {"rgb": read_image(entry.files["rgb"]),
                "x": read_depth_like_cv2_grayscale(entry.files["x"]),
                "label": read_label_image(entry.files["label"])}

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        return uint8_minus_one(raw)


@register_dataset("nyudv2")
class NYUDepthV2Dataset(_IndoorRGBD):
    info = DatasetInfo(name="nyudv2", modalities={"rgb": 3, "x": 1}, classes=NYU_CLASSES,
                       palette=voc_palette(41)[1:], ignore_index=255, x_kind="depth",
                       protocol=SIGMA_MS_FLIP)
    folders = {"dformer": {"rgb": "RGB", "x": "Depth", "label": "Label"},
               "sigma": {"rgb": "RGB", "x": "Depth", "label": "Label"}}
    layout_markers = {"dformer": "RGB/ Depth/ Label/ train.txt test.txt",
                      "sigma": "RGB/ Depth/ Label/ train2.txt test2.txt"}

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if not (root / "RGB").is_dir():
            return None
        if (root / "train2.txt").is_file() or (root / "test2.txt").is_file():
            return "sigma"
        if (root / "train.txt").is_file() or (root / "test.txt").is_file():
            return "dformer"
        return None


@register_dataset("sunrgbd")
class SUNRGBDDataset(_IndoorRGBD):
    info = DatasetInfo(name="sunrgbd", modalities={"rgb": 3, "x": 1}, classes=SUN_CLASSES,
                       palette=voc_palette(38)[1:], ignore_index=255, x_kind="depth",
                       protocol=SIGMA_MS_FLIP)
    folders = {"dformer": {"rgb": "RGB", "x": "Depth", "label": "labels"},
               "sigma": {"rgb": "RGB_resize", "x": "Depth_resize", "label": "labels_resize"}}
    layout_markers = {"dformer": "RGB/ Depth/ labels/ train.txt test.txt",
                      "sigma": "RGB_resize/ Depth_resize/ labels_resize/ train2.txt test2.txt"}

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "RGB_resize").is_dir():
            return "sigma"
        if (root / "RGB").is_dir() and (root / "labels").is_dir():
            return "dformer"
        return None
