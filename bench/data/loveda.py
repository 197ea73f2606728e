"""LoveDA land cover (Wang et al. 2021), 7 classes, RGB only, Urban + Rural scenes.

Layouts (``layout=``):

- ``mmseg`` (mmseg's converter output, used by Samba): ``img_dir/{train,val,test}/<int>.png``,
  ``ann_dir/{train,val}/<int>.png``; Urban and Rural merged (their ids are unique).
- ``native`` (the download): ``{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/<int>.png``;
  ``scene="both"`` (default), ``"urban"`` or ``"rural"`` picks the scenes.

Images are 1024x1024 RGB; masks uint8 with 0 = no-data, 1 background, 2 building, 3 road,
4 water, 5 barren, 6 forest, 7 agriculture. mmseg ``LoveDADataset`` uses
``reduce_zero_label=True``: no-data becomes 255 (ignored), the rest 0..6. The test split has no
public masks. Evaluation follows Samba's LoveDA config: resize to fit 1024x1024 keeping the
ratio (a no-op on LoveDA's 1024² images), whole image, single scale, on ``val``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.io import DataError, MissingPathError, read_image, read_label_image
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_folders,
    reduce_zero_label,
    split_folders,
)
from bench.data.transforms import IMAGENET_MEAN_255, IMAGENET_STD_255

LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agricultural"]
LOVEDA_PALETTE = [(255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183),
                  (0, 255, 0), (255, 195, 128)]
NATIVE_SPLITS = {"train": "Train", "val": "Val", "test": "Test"}
SCENES = {"both": ("Urban", "Rural"), "urban": ("Urban",), "rural": ("Rural",)}


@register_dataset("loveda")
class LoveDADataset(RGBXFolderDataset):
    info = DatasetInfo(name="loveda", modalities={"rgb": 3}, classes=LOVEDA_CLASSES,
                       palette=LOVEDA_PALETTE, ignore_index=255, x_kind=None,
                       protocol={"mode": "whole", "resize": [1024, 1024]})
    layouts = ("mmseg", "native")
    layout_markers = {"mmseg": "img_dir/{train,val,test}/ ann_dir/{train,val}/",
                      "native": "Train/Urban/images_png/ Train/Urban/masks_png/ ..."}
    norm = {"rgb": (IMAGENET_MEAN_255, IMAGENET_STD_255)}
    eight_bit = ("rgb",)

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, scene: str = "both", **options):
        if scene not in SCENES:
            raise DataError(f"LoveDA scene must be one of {', '.join(SCENES)}, got {scene!r}")
        self.scenes = SCENES[scene]
        super().__init__(root, split, augment, corruption, layout, **options)

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "img_dir").is_dir():
            return "mmseg"
        if any((root / folder).is_dir() for folder in NATIVE_SPLITS.values()):
            return "native"
        return None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "mmseg":
            return split_folders(root / "ann_dir")
        return [s for s, folder in NATIVE_SPLITS.items()
                if any((root / folder / scene / "masks_png").is_dir() for scene in SCENES["both"])]

    def split_source(self, split: str) -> Path:
        if self.layout == "mmseg":
            return self.root / "img_dir" / split
        return self.root / NATIVE_SPLITS.get(split, split)

    def list_entries(self, split: str) -> list[Entry]:
        if self.layout == "mmseg":
            folders = {"rgb": self.root / "img_dir" / split, "label": self.root / "ann_dir" / split}
            self._require_masks(split, folders["label"])
            return entries_from_folders("LoveDA", folders, dict.fromkeys(folders, ".png"))
        if split not in NATIVE_SPLITS:
            raise MissingPathError(f"unknown LoveDA split {split!r} (known: train, val, test)",
                                   self.root, kind="missing split file")
        entries = []
        for scene in self.scenes:
            base = self.root / NATIVE_SPLITS[split] / scene
            folders = {"rgb": base / "images_png", "label": base / "masks_png"}
            self._require_masks(split, folders["label"])
            entries += entries_from_folders("LoveDA", folders, dict.fromkeys(folders, ".png"))
        return entries

    @staticmethod
    def _require_masks(split: str, mask_dir: Path) -> None:
        if split == "test" and not mask_dir.is_dir():
            raise MissingPathError("LoveDA test masks are not public; evaluate on val (as Samba "
                                   "does) or score test on the LoveDA server", mask_dir,
                                   kind="missing split file")

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        return {"rgb": read_image(entry.files["rgb"]),
                "label": read_label_image(entry.files["label"])}

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        return reduce_zero_label(raw)
