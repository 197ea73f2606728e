"""PST900 RGB-thermal subterranean scenes (Shivakumar et al. 2020), 5 classes incl. background.

Layouts (``layout=``):

- ``native`` (ShreyasSkandanS/pst900_thermal_rgb): ``<root>/{train,test}/{rgb,thermal,labels}/
  <name>.png`` (also ``thermal_raw`` uint16 and ``depth`` uint16, unused here), e.g.
  ``31_bag1a_rect_rgb_frame0000000007.png``. rgb 1280x720 uint8, thermal uint8 (FLIR AGC; 1
  channel, or grey replicated to 3, which is collapsed), labels uint8 0..4. Splits are the folders.
- ``sigma`` (Sigma config_pst900): ``rgb_resize/ thermal_resize/ labels_resize/`` with
  ``train.txt`` (597) and ``test.txt`` (288) of bare stems; 720x1280.

Thermal value 0 marks a parallax hole (pixels the thermal camera does not see after
registration). Sigma feeds them as they are (``thermal_holes="keep"``, the default); the toolkit
inpaints them with ``cv2.inpaint`` (Telea). ``thermal_holes="fill"`` fills each hole from its
valid neighbours, ring by ring inwards (a mean-of-neighbours diffusion, not Telea's
gradient-weighted march; OpenCV is not a dependency).

Background is a real class (``gt_transform=False``). Evaluation: Sigma's sliding window with
crop 720x1280 (= the image), stride rate 2/3, scale 1, no flip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.io import (
    DataError,
    MissingPathError,
    as_grayscale,
    list_stems,
    read_image,
    read_label_image,
)
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    Entry,
    RGBXFolderDataset,
    entries_from_split_file,
    split_files,
    split_folders,
)

PST900_CLASSES = ["background", "fire_extinguisher", "backpack", "hand_drill", "survivor"]
# The toolkit's colormap is BGR; in RGB: extinguisher red, backpack green, drill blue,
# survivor white.
PST900_PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


@register_dataset("pst900")
class PST900Dataset(RGBXFolderDataset):
    info = DatasetInfo(name="pst900", modalities={"rgb": 3, "x": 1}, classes=PST900_CLASSES,
                       palette=PST900_PALETTE, ignore_index=255, x_kind="thermal",
                       protocol={"mode": "slide", "crop": [720, 1280], "stride_rate": 2 / 3,
                                 "windows": "sigma"})
    layouts = ("native", "sigma")
    layout_markers = {"native": "train/rgb/ train/thermal/ train/labels/ test/...",
                      "sigma": "rgb_resize/ thermal_resize/ labels_resize/ train.txt test.txt"}
    _SIGMA_FOLDERS = {"rgb": "rgb_resize", "x": "thermal_resize", "label": "labels_resize"}
    _NATIVE_FOLDERS = {"rgb": "rgb", "x": "thermal", "label": "labels"}

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, thermal_holes: str = "keep", **options):
        if thermal_holes not in ("keep", "fill"):
            raise DataError(f"thermal_holes must be 'keep' or 'fill', got {thermal_holes!r}")
        self.thermal_holes = thermal_holes
        super().__init__(root, split, augment, corruption, layout, **options)

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        if (root / "rgb_resize").is_dir():
            return "sigma"
        if any((root / s / "rgb").is_dir() for s in split_folders(root)):
            return "native"
        return None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        if layout == "sigma":
            return split_files(root)
        return [s for s in split_folders(root) if (root / s / "rgb").is_dir()]

    def split_source(self, split: str) -> Path:
        return self.root / (f"{split}.txt" if self.layout == "sigma" else f"{split}/rgb")

    def list_entries(self, split: str) -> list[Entry]:
        if self.layout == "sigma":
            folders = {r: self.root / d for r, d in self._SIGMA_FOLDERS.items()}
            return entries_from_split_file("PST900", self.root / f"{split}.txt", folders,
                                           dict.fromkeys(folders, ".png"))
        split_dir = self.root / split
        if not (split_dir / "rgb").is_dir():
            known = ", ".join(self.available_splits(self.root, "native")) or "none"
            raise MissingPathError(f"PST900 split folder not found (splits here: {known})",
                                   split_dir / "rgb", kind="missing split file")
        return [Entry(stem, {r: split_dir / d / f"{stem}.png"
                             for r, d in self._NATIVE_FOLDERS.items()})
                for stem in list_stems(split_dir / "rgb", (".png",))]

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        thermal = as_grayscale(read_image(entry.files["x"]), entry.files["x"])
        if self.thermal_holes == "fill":
            thermal = fill_holes(thermal)
        return {"rgb": read_image(entry.files["rgb"]), "x": thermal,
                "label": read_label_image(entry.files["label"])}


def fill_holes(image: np.ndarray, hole_value: int = 0) -> np.ndarray:
    """Fill pixels equal to ``hole_value`` from the mean of their valid 8-neighbours, one ring
    per pass, until none is left (or nothing valid remains to spread)."""
    out = image.astype(np.float32)
    holes = image == hole_value
    while holes.any():
        valid = (~holes).astype(np.float32)
        padded_values = np.pad(out * valid, 1)
        padded_valid = np.pad(valid, 1)
        total = np.zeros_like(out)
        count = np.zeros_like(out)
        height, width = out.shape
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                total += padded_values[dy:dy + height, dx:dx + width]
                count += padded_valid[dy:dy + height, dx:dx + width]
        reachable = holes & (count > 0)
        if not reachable.any():
            break
        out[reachable] = total[reachable] / count[reachable]
        holes &= ~reachable
    return np.rint(out).astype(image.dtype) if image.dtype.kind in "ui" else out
