"""Hunan multimodal land cover (Zhou et al., DKDFN 2022): Sentinel-2 + Sentinel-1 + SRTM, 256².

Layouts (``layout=``):

- ``native`` (SEN12MS-style, as third-party loaders read the release; folder names are not
  pinned down by an official loader, so ``dem/`` and ``topo/`` are both accepted):
  ``<split>/s2/s2_<id>.tif`` 13 bands, ``<split>/s1/s1_<id>.tif`` 2 bands (VV, VH, dB),
  ``<split>/dem/dem_<id>.tif`` (SRTM), ``<split>/lc/lc_<id>.tif`` land-cover codes.
  The labels go through the dataset's official remap, ``lc[lc == 255] = 12`` then the table
  ``[255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255]``, which gives 0 cropland, 1 forest,
  2 grassland, 3 wetland, 4 water, 5 unused land, 6 built-up and 255 ignore; the table's 7
  (code 11) is merged into 6 as the loaders do. Codes outside 0..11 and 255 are errors.
- ``mmseg`` (Mamba-Diffusion ``hunan_cat``): ``cat1/<split>/<name>.tif`` 15 bands (13 S2 then
  2 S1) and ``lbl/<split>/<name>.tif`` with ``reduce_zero_label=True`` (0 -> 255, v -> v - 1).

Modalities: "rgb" = the 13 Sentinel-2 bands, "x" = the 2 Sentinel-1 bands, as Mamba-Diffusion
splits its 15 channels; ``with_dem=True`` (native layout) appends the DEM bands to X, each
min-max scaled per patch to [0, 1] (``dem_bands`` of them, default 1). Statistics are
Mamba-Diffusion's ``img_norm_cfg`` as configured (its "std" values look like variances; kept
to reproduce the paper). Mamba-Diffusion's class list puts "unused land" before "water"; the
official remap above puts water at 4, and we follow the remap. Evaluation: whole image resized
to fit 256x256 keeping the ratio (a no-op on 256² patches), single scale.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.data.io import (
    DataError,
    DataFormatError,
    MissingPathError,
    list_stems,
    read_channels,
    read_image,
    read_label_image,
)
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_folders,
    reduce_zero_label,
    split_folders,
)

HUNAN_CLASSES = ["cropland", "forest", "grassland", "wetland", "water", "unused_land",
                 "built_up"]
HUNAN_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                 (153, 153, 153), (250, 170, 30)]
#: the official remap table, indexed by the land-cover code (255 first moved to 12)
OFFICIAL_REMAP = np.array([255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255], dtype=np.int64)
S2_MEAN = (1400.32, 1117.23, 994.44, 787.33, 1016.67, 1754.84, 2082.32, 1973.73, 2264.01,
           502.14, 6.38, 1482.67, 818.22)
S2_STD = (9664.63, 14092.01, 20028.46, 48678.92, 44938.45, 184570.05, 316813.94, 320642.53,
          436656.31, 16580.50, 11.98, 250519.375, 136984.2)
S1_MEAN, S1_STD = (-10.33, -16.48), (20.4, 18.79)


def remap_land_cover(raw: np.ndarray) -> np.ndarray:
    codes = raw.astype(np.int64)
    bad = ((codes < 0) | (codes > 11)) & (codes != 255)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(raw[bad])[:8])
        raise DataFormatError(f"land-cover codes {values} are not in the official table "
                              "(0..11 and 255)", kind="bad label encoding")
    codes[codes == 255] = 12
    label = OFFICIAL_REMAP[codes]
    label[label == 7] = 6  # the table's 7 is built-up too; loaders merge it
    return label


@register_dataset("hunan")
class HunanDataset(RGBXFolderDataset):
    info = DatasetInfo(name="hunan", modalities={"rgb": 13, "x": 2}, classes=HUNAN_CLASSES,
                       palette=HUNAN_PALETTE, ignore_index=255, x_kind="sar",
                       protocol={"mode": "whole", "resize": [256, 256]})
    layouts = ("mmseg", "native")
    layout_markers = {"mmseg": "cat1/<split>/ lbl/<split>/ (15-band tif)",
                      "native": "<split>/s2/ <split>/s1/ <split>/lc/ [<split>/dem/]"}
    norm = {"rgb": (S2_MEAN, S2_STD), "x": (S1_MEAN, S1_STD)}
    eight_bit = ()  # Sentinel-2 / Sentinel-1 float and 16-bit bands
    full_scale = {"rgb": 10000.0, "x": 25.0}  # S2 reflectance x 1e4; S1 backscatter span in dB

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, with_dem: bool = False, dem_bands: int = 1, **options):
        self.with_dem = bool(with_dem)
        self.dem_bands = int(dem_bands)
        super().__init__(root, split, augment, corruption, layout, **options)
        if self.with_dem and self.layout != "native":
            raise DataError("with_dem needs the native layout (cat1/ holds no DEM)", self.root)

    def make_info(self) -> DatasetInfo:
        info = super().make_info()
        if self.with_dem:
            info = dataclasses.replace(info, modalities={"rgb": 13, "x": 2 + self.dem_bands})
        return info

    def norm_for_layout(self) -> dict[str, tuple]:
        if not self.with_dem:
            return self.norm
        dem = (0.0,) * self.dem_bands, (1.0,) * self.dem_bands
        return dict(self.norm, x=(S1_MEAN + dem[0], S1_STD + dem[1]))

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "cat1").is_dir():
            return "mmseg"
        if any((root / s / "s2").is_dir() for s in split_folders(root)):
            return "native"
        return None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "mmseg":
            return split_folders(root / "lbl")
        return [s for s in split_folders(root) if (root / s / "lc").is_dir()]

    def split_source(self, split: str) -> Path:
        return self.root / ("cat1" if self.layout == "mmseg" else "") / split

    def list_entries(self, split: str) -> list[Entry]:
        if self.layout == "mmseg":
            folders = {"image": self.root / "cat1" / split, "label": self.root / "lbl" / split}
            return entries_from_folders("Hunan", folders, dict.fromkeys(folders, ".tif"),
                                        primary="image")
        base = self.root / split
        roles = {"rgb": "s2", "x": "s1", "label": "lc"}
        if self.with_dem:
            roles["dem"] = "dem" if (base / "dem").is_dir() or not (base / "topo").is_dir() \
                else "topo"
        if not (base / "s2").is_dir():
            known = ", ".join(self.available_splits(self.root, "native")) or "none"
            raise MissingPathError(f"Hunan split folder not found (splits here: {known})",
                                   base / "s2", kind="missing split file")
        ids = [stem[len("s2_"):] for stem in list_stems(base / "s2", (".tif",))
               if stem.startswith("s2_")]
        return [Entry(i, {role: base / folder / f"{folder}_{i}.tif"
                          for role, folder in roles.items()}) for i in ids]

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        label = read_label_image(entry.files["label"])
        if self.layout == "mmseg":
            image = read_channels(entry.files["image"], 15,
                                  "15 bands (13 Sentinel-2 + 2 Sentinel-1)")
            return {"rgb": image[..., :13], "x": image[..., 13:], "label": label}
        x = read_image(entry.files["x"]).astype(np.float32)
        if self.with_dem:
            dem = read_image(entry.files["dem"]).astype(np.float32)
            dem = dem[..., None] if dem.ndim == 2 else dem
            if dem.shape[:2] != x.shape[:2]:
                raise DataFormatError(f"DEM is {dem.shape[1]}x{dem.shape[0]}, S1 is "
                                      f"{x.shape[1]}x{x.shape[0]}", entry.files["dem"],
                                      kind="size mismatch")
            low, high = dem.min(axis=(0, 1)), dem.max(axis=(0, 1))
            dem = (dem - low) / np.where(high > low, high - low, 1.0)
            x = np.concatenate([x[..., None] if x.ndim == 2 else x, dem], axis=2)
        return {"rgb": read_image(entry.files["rgb"]), "x": x, "label": label}

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        return reduce_zero_label(raw) if self.layout == "mmseg" else remap_land_cover(raw)
