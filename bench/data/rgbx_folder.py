"""``RGBXFolderDataset``: the one reader behind every real RGB-X dataset.

A dataset subclass declares what differs between datasets and nothing else:

- ``info``: modalities with their native channel counts, classes, palette, ignore index, the
  paper's evaluation protocol;
- ``layouts``: the on-disk layouts it reads (``layout_markers`` says how ``layout="auto"``
  recognises each), ``list_entries(split)`` giving one ``Entry`` (sample name and the files of
  each role) per sample, ``read_arrays(entry)`` decoding them to raw arrays and
  ``decode_label(raw, entry)`` turning the label file's encoding into class indices;
- ``norm``: per-modality mean and std in raw units (the paper's statistics).

The base class does the rest, identically for every dataset: path checks with clear errors,
channel-count, size and label-range validation (``load_raw``), the robustness corruption in the
raw domain, the train augmentation, normalisation and the item contract of
``bench/data/registry.py``. ``bench/data/checks.py`` walks the same ``entries`` and ``load_raw``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.corruptions import apply_corruption, check_applicable
from bench.data.io import (
    DataError,
    DataFormatError,
    LabelRangeError,
    MissingPathError,
    SplitError,
    channels_last,
    list_stems,
    read_split_file,
)
from bench.data.registry import DatasetInfo
from bench.data.transforms import IMAGENET_MEAN_255, IMAGENET_STD_255, finish_sample, parse_augment

#: Sigma/CMX normalise RGB and the (grey, replicated) X with ImageNet statistics on x/255.
SIGMA_NORM = {"rgb": (IMAGENET_MEAN_255, IMAGENET_STD_255),
              # One X channel: the mean of the three ImageNet statistics. Sigma replicates X to
              # three channels and normalises each with its own value; ``x_replicate=3`` does that
              # exactly.
              "x": ((sum(IMAGENET_MEAN_255) / 3,), (sum(IMAGENET_STD_255) / 3,))}


@dataclass(frozen=True)
class Entry:
    """One sample: its name and the file of each role ("rgb", "x", "label", "image", ...)."""
    name: str
    files: dict[str, Path]
    meta: dict = field(default_factory=dict)


class RGBXFolderDataset(Dataset):
    info: ClassVar[DatasetInfo]
    layouts: ClassVar[tuple[str, ...]] = ()
    #: layout -> how it looks on disk (for the "cannot recognise the layout" message)
    layout_markers: ClassVar[dict[str, str]] = {}
    norm: ClassVar[dict[str, tuple]] = SIGMA_NORM
    #: modality -> full-scale raw value for float data (noise corruption), e.g. {"x": 1.0}
    full_scale: ClassVar[dict[str, float]] = {}
    #: modalities whose files hold 8-bit values (the normalisation is in 0..255 units): a file of
    #: another bit depth there is refused, or rescaled with the option ``rescale_16bit: true``
    eight_bit: ClassVar[tuple[str, ...]] = ("rgb", "x")

    def __init__(self, root=None, split: str = "train", augment=None, corruption=None,
                 layout: str = "auto", *, corruption_seed: int = 0, norm: dict | None = None,
                 rgb_order: str = "rgb", x_replicate: int = 1, rescale_16bit: bool = False):
        name = self.info.name
        if root is None:
            raise DataError(f"dataset {name!r} needs root: the folder holding its files "
                            f"(in a suite: datasets: [{{name: {name}, root: /data/...}}])")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingPathError(f"{name} root folder not found", self.root, kind="missing root")
        if rgb_order not in ("rgb", "bgr"):
            raise DataError(f"rgb_order must be 'rgb' or 'bgr', got {rgb_order!r}")
        self.rgb_order = rgb_order
        self.rescale_16bit = bool(rescale_16bit)
        self.layout = self.resolve_layout(self.root, layout)
        self.split = split
        self.x_replicate = int(x_replicate)
        self.info = self.make_info()
        self.norm = self.resolve_norm(norm)
        self.corruption = check_applicable(corruption, self.info.modalities)
        self.corruption_seed = int(corruption_seed)
        self.augment = parse_augment(augment)
        # "train+val" concatenates splits (Sigma trains MFNet on train + val = train2.txt).
        self.entries = [e for part in split.split("+") for e in self.list_entries(part)]
        if not self.entries:
            raise SplitError(f"{name} split {split!r} ({self.layout} layout) has no samples",
                             self.split_source(split), kind="empty split")

    # ------------------------------------------------------------------ hooks for subclasses
    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        raise NotImplementedError

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        raise NotImplementedError

    def list_entries(self, split: str) -> list[Entry]:
        raise NotImplementedError

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        """Raw arrays by role: modalities (H, W) or (H, W, C), and the undecoded "label"."""
        raise NotImplementedError

    def decode_label(self, raw: np.ndarray, entry: Entry) -> np.ndarray:
        return raw.astype(np.int64)

    def split_source(self, split: str) -> Path:
        """The file or folder that defines ``split`` (named in empty-split errors)."""
        return self.root

    def make_info(self) -> DatasetInfo:
        info = type(self).info
        if self.x_replicate != 1:
            if "x" not in info.modalities:
                raise DataError(f"x_replicate: {info.name} has no X modality")
            modalities = dict(info.modalities, x=info.modalities["x"] * self.x_replicate)
            info = dataclasses.replace(info, modalities=modalities)
        return info

    # ------------------------------------------------------------------------------ layout
    @classmethod
    def resolve_layout(cls, root: Path, layout: str) -> str:
        if layout == "auto":
            detected = cls.detect_layout(root)
            if detected is None:
                expected = "; ".join(f"{k}: {v}" for k, v in cls.layout_markers.items())
                raise DataError(f"cannot recognise the {cls.info.name} layout "
                                f"(expected {expected})", root, kind="unknown layout")
            return detected
        if layout not in cls.layouts:
            raise DataError(f"unknown {cls.info.name} layout {layout!r} "
                            f"(known: auto, {', '.join(cls.layouts)})", kind="unknown layout")
        return layout

    def resolve_norm(self, override: dict | None) -> dict[str, tuple]:
        norm = {}
        for modality, channels in self.info.modalities.items():
            if modality not in self.norm_for_layout():
                continue
            mean, std = (override or {}).get(modality, self.norm_for_layout()[modality])
            mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
            if modality == "x" and self.x_replicate != 1:
                if len(mean) == 1 and override is None and self.norm_for_layout() is SIGMA_NORM:
                    mean, std = IMAGENET_MEAN_255, IMAGENET_STD_255  # Sigma's 3-channel X
                elif len(mean) * self.x_replicate == channels:
                    mean, std = mean * self.x_replicate, std * self.x_replicate
            for stat in (mean, std):
                if len(stat) not in (1, channels):
                    raise DataError(f"{self.info.name}: normalisation of {modality!r} has "
                                    f"{len(stat)} values for {channels} channels")
            norm[modality] = (mean, std)
        return norm

    def norm_for_layout(self) -> dict[str, tuple]:
        return type(self).norm

    # ------------------------------------------------------------------------- loading
    def __len__(self) -> int:
        return len(self.entries)

    def missing_files(self, entry: Entry) -> list[tuple[str, Path]]:
        return [(role, path) for role, path in entry.files.items() if not path.is_file()]

    @staticmethod
    def modality_path(entry: Entry, modality: str) -> Path | None:
        """The file a modality is read from (MFNet's native RGBA "image" holds rgb and x)."""
        return entry.files.get(modality) or entry.files.get("image")

    def load_raw(self, entry: Entry) -> dict[str, np.ndarray]:
        """Decode and validate one sample: modalities (H, W, C) raw, "label" int64 (H, W)."""
        for role, path in self.missing_files(entry):
            raise MissingPathError(f"{role} file of sample {entry.name!r} not found", path)
        label_path = entry.files.get("label")
        try:
            arrays = self.read_arrays(entry)
            raw_label = arrays["label"]
            label = self.decode_label(raw_label, entry)
        except DataError as error:
            if error.path is None:  # decoders that only see arrays: name the label file
                error.path = label_path
            raise
        sample = {}
        for modality, channels in self.info.modalities.items():
            if modality == "text":
                continue  # token ids, not an image (referring datasets)
            if modality in self.eight_bit:
                arrays[modality] = self.check_bit_depth(arrays[modality], entry, modality)
            if modality == "x":
                channels //= self.x_replicate  # the file holds the native channels
            array = channels_last(arrays[modality])
            if array.shape[2] != channels:
                raise DataFormatError(
                    f"{modality} has {array.shape[2]} channel(s), expected {channels}",
                    self.modality_path(entry, modality), kind="wrong channel count")
            sample[modality] = array
        self.check_sizes(entry, sample, label)
        self.check_label_range(label, label_path)
        if self.rgb_order == "bgr" and "rgb" in sample:
            sample["rgb"] = sample["rgb"][..., ::-1]  # Sigma's cv2.imread: BGR order (see §0)
        sample["label"] = label
        return sample

    def check_bit_depth(self, array: np.ndarray, entry: Entry, modality: str) -> np.ndarray:
        """An 8-bit modality read from a 16-bit file (a raw ``I;16`` thermal frame) would be
        normalised with 0..255 statistics and train on values up to 65535."""
        if array.dtype.kind not in "ui" or array.dtype.itemsize == 1:
            return array
        if self.rescale_16bit and array.dtype == np.uint16:
            return (array >> 8).astype(np.uint8)  # OpenCV's 16 -> 8 bit reading (value / 256)
        raise DataFormatError(
            f"{modality} of sample {entry.name!r} is {array.dtype.itemsize * 8}-bit "
            f"({array.dtype}), but {self.info.name} {modality} images are 8-bit; convert the "
            f"files to 8-bit, or set the dataset option rescale_16bit: true (value / 256, as "
            f"OpenCV reads a 16-bit file)", self.modality_path(entry, modality),
            kind="wrong bit depth")

    def check_sizes(self, entry: Entry, sample: dict, label: np.ndarray) -> None:
        sizes = {m: a.shape[:2] for m, a in sample.items()}
        sizes["label"] = label.shape
        if len(set(sizes.values())) > 1:
            described = ", ".join(f"{role} {h}x{w} ({self.modality_path(entry, role) or ''})"
                                  for role, (h, w) in sizes.items())
            raise DataFormatError(f"sample {entry.name!r}: sizes differ: {described}",
                                  entry.files.get("label"), kind="size mismatch")

    def check_label_range(self, label: np.ndarray, path: Path | None) -> None:
        num_classes, ignore = self.info.num_classes, self.info.ignore_index
        bad = ((label < 0) | (label >= num_classes)) & (label != ignore)
        if bad.any():
            values, counts = np.unique(label[bad], return_counts=True)
            shown = ", ".join(f"{v} ({c} px)" for v, c in zip(values[:8], counts[:8]))
            raise LabelRangeError(
                f"label values outside 0..{num_classes - 1} and ignore {ignore}: {shown}", path)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        sample = self.load_raw(entry)
        if not self.corruption.is_clean:
            sample = apply_corruption(sample, self.corruption, index, self.corruption_seed,
                                      self.full_scale)
        if self.x_replicate != 1:  # after the corruption: one sensor, copied (as Sigma's model)
            sample["x"] = np.repeat(sample["x"], self.x_replicate, axis=2)
        rng = None
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return finish_sample(sample, self.norm, entry.name, self.augment,
                             self.info.ignore_index, rng)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"layout={self.layout!r}, n={len(self)})")


# ----------------------------------------------------------------------------- shared helpers

def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """mmseg ``reduce_zero_label``: 0 -> 255, v -> v - 1, and 255 stays 255 (the 254 -> 255
    step)."""
    label = raw.astype(np.int64)
    out = label - 1
    out[label == 0] = 255
    out[label == 255] = 255
    return out


def uint8_minus_one(raw: np.ndarray) -> np.ndarray:
    """Sigma/CMX ``_gt_transform``: ``gt - 1`` in uint8, so void 0 wraps to 255 (ignore)."""
    if raw.dtype != np.uint8:
        raise DataFormatError(f"label is {raw.dtype}; Sigma's gt - 1 expects uint8",
                              kind="bad label encoding")
    return (raw - np.uint8(1)).astype(np.int64)


def split_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def entries_from_split_file(dataset_name: str, split_file: Path, folders: dict[str, Path],
                            suffixes: dict[str, str]) -> list[Entry]:
    """One Entry per stem in ``split_file``; role r's file is ``folders[r] / (stem + suffixes[r])``
    (Sigma/CMX ``RGBXDataset``: ``root/<name><fmt>`` per modality)."""
    if not split_file.is_file():
        listed = sorted(p.name for p in split_file.parent.glob("*.txt"))
        raise MissingPathError(
            f"{dataset_name} split file not found (split files here: "
            f"{', '.join(listed) if listed else 'none'})", split_file, kind="missing split file")
    return [Entry(stem, {role: folders[role] / f"{stem}{suffixes[role]}" for role in folders})
            for stem in read_split_file(split_file)]


def split_files(root: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Split names defined by ``*.txt`` files in ``root``."""
    return sorted(p.stem for p in root.glob("*.txt") if p.stem not in exclude)


def entries_from_folders(dataset_name: str, folders: dict[str, Path], suffixes: dict[str, str],
                         primary: str = "rgb") -> list[Entry]:
    """mmseg ``CustomDataset`` style: one Entry per file in ``folders[primary]``; role r's file is
    ``folders[r] / (stem + suffixes[r])``."""
    primary_dir = folders[primary]
    if not primary_dir.is_dir():
        siblings = split_folders(primary_dir.parent)
        raise MissingPathError(
            f"{dataset_name} split folder not found (splits here: "
            f"{', '.join(siblings) if siblings else 'none'})", primary_dir,
            kind="missing split file")
    stems = list_stems(primary_dir, (suffixes[primary],))
    return [Entry(stem, {role: folder / f"{stem}{suffixes[role]}"
                         for role, folder in folders.items()}) for stem in stems]
