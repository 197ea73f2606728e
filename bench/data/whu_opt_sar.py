"""WHU-OPT-SAR (Li et al. 2022): GF-1 optical (R, G, B, NIR) + GF-3 SAR land use, 5 m.

Layouts (``layout=``):

- ``tiles`` (the download): ``optical/<tile>.tif`` 4-band uint8, ``sar/<tile>.tif`` 1-band uint8,
  ``lbl/<tile>.tif`` 1-band (folder aliases ``opt``, ``label``, ``labels`` accepted), 100 tiles of
  5556x3704 named like ``NH49E001014.tif``, and the official split file
  ``The division of the dataset.txt`` (``train:`` / ``test:`` headers, 80 / 20 tile names).
  Samples are the 256x256 crops SOLC cuts: a non-overlapping grid from the top-left corner,
  remainders dropped (21 x 14 = 294 per tile), numbered row-major ``<tile>_<k>``.
- ``solc``: ``{train,val,test}/{opt,sar,lbl}/<tile>_<k>.tif`` crops (SOLC's 6:2:2 split).
- ``mmseg`` (Mamba-Diffusion ``whu_cat``): ``cat/{train,val,test}/<name>.tif`` 5 bands (4 optical
  then SAR) and ``label/{train,val,test}/<name>.tif``; ``ssmbench data convert whu_opt_sar``
  writes it from the tiles.

Label values are 0 background, 10 farmland, 20 city, 30 village, 40 water, 50 forest, 60 road,
70 others in the download and SOLC crops (x10; SOLC divides by 10, which the loader does and
checks), and 0..7 in the mmseg layout. Mamba-Diffusion uses ``reduce_zero_label=True``:
background becomes 255 and the 7 land-use classes 0..6 (default); ``keep_background=True``
keeps 8 classes with background = 0 (SOLC).

Modalities: "rgb" = the 4 optical bands, "x" = SAR. Statistics are Mamba-Diffusion's
``img_norm_cfg`` as configured; its "std" values (e.g. 2169.97 for 8-bit SAR) are evidently
variances, kept as they are to reproduce the paper. Evaluation: whole image, resized to fit
512x512 keeping the ratio (the test ``Resize``), single scale, no flip.
"""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile

from bench.data.io import (
    DataError,
    DataFormatError,
    MissingPathError,
    SplitError,
    read_channels,
    read_image,
    read_label_image,
    read_text_file,
)
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_folders,
    reduce_zero_label,
    split_folders,
)

WHU_CLASSES = ["farmland", "city", "village", "water", "forest", "road", "others"]
WHU_PALETTE = [(139, 69, 19), (255, 0, 0), (255, 255, 0), (0, 0, 255), (0, 255, 0),
               (0, 255, 255), (205, 96, 144)]
CROP = 256
TILE_FOLDERS = {"rgb": ("optical", "opt"), "x": ("sar",), "label": ("lbl", "label", "labels")}


def parse_division_file(path: Path) -> dict[str, list[str]]:
    """``train:`` / ``test:`` headers followed by tile names (same line or following lines,
    separated by whitespace, commas or semicolons) -> {"train": [stems], "test": [stems]}."""
    splits: dict[str, list[str]] = {}
    current = None
    for number, line in enumerate(read_text_file(path, "division file").splitlines(), 1):
        header = re.match(r"\s*([A-Za-z]+)\s*[:：]\s*(.*)$", line)
        if header:
            current = header.group(1).lower()
            splits.setdefault(current, [])
            line = header.group(2)
        names = [n for n in re.split(r"[\s,;]+", line) if n]
        if names and current is None:
            raise SplitError(f"line {number}: tile names before any 'train:' / 'test:' header",
                             path, kind="bad split line")
        if names:
            splits[current].extend(Path(n).stem for n in names)
    return splits


def find_division_file(root: Path) -> Path | None:
    candidates = sorted(root.glob("*ivision*.txt"))
    return candidates[0] if candidates else None


@lru_cache(maxsize=6)
def _open_tile(path: str) -> np.ndarray:
    """Whole tile, memory-mapped when uncompressed (so a 256² crop reads only its rows)."""
    try:
        array = tifffile.memmap(path, mode="r")
    except Exception:  # compressed or tiled: read it whole once
        array = read_image(Path(path))
    if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 16:
        array = np.moveaxis(array, 0, -1)  # band-first memmap
    return array


@register_dataset("whu_opt_sar")
class WHUOptSARDataset(RGBXFolderDataset):
    info = DatasetInfo(name="whu_opt_sar", modalities={"rgb": 4, "x": 1}, classes=WHU_CLASSES,
                       palette=WHU_PALETTE, ignore_index=255, x_kind="sar",
                       protocol={"mode": "whole", "resize": [512, 512]})
    layouts = ("mmseg", "solc", "tiles")
    layout_markers = {"mmseg": "cat/<split>/ label/<split>/ (5-band tif)",
                      "solc": "<split>/opt/ <split>/sar/ <split>/lbl/",
                      "tiles": "optical/ sar/ lbl/ 'The division of the dataset.txt'"}
    eight_bit = ()  # optical bands are read in their native depth (see norm)
    norm = {"rgb": ((104.74, 96.77, 79.21, 100.92), (171.04, 217.80, 305.58, 697.17)),
            "x": ((54.12,), (2169.97,))}

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, keep_background: bool = False, **options):
        self.keep_background = bool(keep_background)
        super().__init__(root, split, augment, corruption, layout, **options)

    def make_info(self) -> DatasetInfo:
        info = super().make_info()
        if self.keep_background:
            info = dataclasses.replace(info, classes=["background"] + WHU_CLASSES,
                                       palette=[(0, 0, 0)] + WHU_PALETTE)
        return info

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "cat").is_dir():
            return "mmseg"
        if any((root / s / "opt").is_dir() for s in split_folders(root)):
            return "solc"
        if _tile_folder(root, "rgb") is not None:
            return "tiles"
        return None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "mmseg":
            return split_folders(root / "label")
        if layout == "solc":
            return [s for s in split_folders(root) if (root / s / "opt").is_dir()]
        division = find_division_file(root)
        return sorted(parse_division_file(division)) if division else []

    def split_source(self, split: str) -> Path:
        if self.layout == "mmseg":
            return self.root / "cat" / split
        if self.layout == "solc":
            return self.root / split / "opt"
        return find_division_file(self.root) or self.root

    def list_entries(self, split: str) -> list[Entry]:
        if self.layout == "mmseg":
            folders = {"image": self.root / "cat" / split, "label": self.root / "label" / split}
            return entries_from_folders("WHU-OPT-SAR", folders, dict.fromkeys(folders, ".tif"),
                                        primary="image")
        if self.layout == "solc":
            base = self.root / split
            folders = {"rgb": base / "opt", "x": base / "sar", "label": base / "lbl"}
            return entries_from_folders("WHU-OPT-SAR", folders, dict.fromkeys(folders, ".tif"))
        return self._tile_entries(split)

    def _tile_entries(self, split: str) -> list[Entry]:
        division = find_division_file(self.root)
        if division is None:
            raise MissingPathError("WHU-OPT-SAR split file 'The division of the dataset.txt' not "
                                   "found", self.root / "The division of the dataset.txt",
                                   kind="missing split file")
        splits = parse_division_file(division)
        if split not in splits:
            raise SplitError(f"no {split!r} section (sections: {', '.join(splits) or 'none'})",
                             division, kind="missing split file")
        folders = {role: _tile_folder(self.root, role) for role in TILE_FOLDERS}
        for role, folder in folders.items():
            if folder is None:
                raise MissingPathError(f"WHU-OPT-SAR {role} tile folder not found (tried "
                                       f"{', '.join(TILE_FOLDERS[role])})",
                                       self.root / TILE_FOLDERS[role][0])
        entries = []
        for tile in splits[split]:
            files = {role: folder / f"{tile}.tif" for role, folder in folders.items()}
            rows, cols = self._tile_grid(files["label"])
            entries += [Entry(f"{tile}_{row * cols + col}", files,
                              {"box": (row * CROP, col * CROP)})
                        for row in range(rows) for col in range(cols)]
        return entries

    @staticmethod
    def _tile_grid(label_path: Path) -> tuple[int, int]:
        if not label_path.is_file():
            return 1, 1  # one placeholder entry: load_raw reports the missing file
        try:
            with tifffile.TiffFile(label_path) as tif:
                height, width = tif.series[0].shape[:2]
        except Exception as error:
            raise DataError(f"cannot read the tile size ({error})", label_path,
                            kind="corrupt file") from None
        return height // CROP, width // CROP

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        if self.layout == "mmseg":
            image = read_channels(entry.files["image"], 5, "5 bands (R, G, B, NIR, SAR)")
            return {"rgb": image[..., :4], "x": image[..., 4],
                    "label": read_label_image(entry.files["label"])}
        if self.layout == "solc":
            return {"rgb": read_image(entry.files["rgb"]), "x": read_image(entry.files["x"]),
                    "label": read_label_image(entry.files["label"])}
        top, left = entry.meta["box"]
        arrays = {}
        for role, path in entry.files.items():
            tile = _open_tile(str(path))
            arrays[role] = np.array(tile[top:top + CROP, left:left + CROP])
        if arrays["label"].ndim == 3 and arrays["label"].shape[2] == 1:
            arrays["label"] = arrays["label"][..., 0]
        return arrays

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        if self.layout != "mmseg":
            raw = divide_by_ten(raw)
        label = raw.astype(np.int64)
        return label if self.keep_background else reduce_zero_label(label)


def divide_by_ten(raw: np.ndarray) -> np.ndarray:
    """WHU labels are class x 10 (0, 10, ..., 70); SOLC divides by 10. Other values are errors."""
    off_grid = raw % 10 != 0
    if off_grid.any():
        values = ", ".join(str(v) for v in np.unique(raw[off_grid])[:8])
        raise DataFormatError(f"label values {values} are not multiples of 10 (WHU labels are "
                              "class x 10)", kind="bad label encoding")
    return raw // 10


def _tile_folder(root: Path, role: str) -> Path | None:
    for name in TILE_FOLDERS[role]:
        if (root / name).is_dir():
            return root / name
    return None
