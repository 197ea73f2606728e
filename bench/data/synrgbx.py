"""SynRGBX: the synthetic RGB + X segmentation benchmark designed in docs/datasets.md.

``synrgbx`` renders scenes in memory (``bench/data/synrgbx_render.py``), deterministically from
``seed``; ``export_synrgbx(root, ...)`` writes the same samples in the Sigma/CMX layout
``{RGB,Modal,Label}/<id>.png`` + ``train.txt val.txt test.txt`` + ``meta.json``, which
``synrgbx_folder`` (an ``RGBXFolderDataset``) reads back byte-identically.

Options (a suite's ``datasets: [{name: synrgbx, flavour: thermal, ...}]``):

    flavour            depth | thermal | sar | dsm (what X measures)
    size               image side in pixels (64; shapes scale with size / 64)
    counts             [train, val, test] or {train: .., val: .., test: ..}; default 2000/500/500
    seed               the dataset's seed (not the cell's): which scenes are drawn
    boundary           set the 1-px boundary of every region to 255 (ISPRS style)
    ndsm               dsm flavour without the ground field (removes the need for context)
    modality_dropout   train split: zero one modality (RGB or X, equally likely) with this
                       probability (0.1)
    train_misreg       train split: affine misregistration of X with shift S (2; 0 = off)

Robustness sets (``eval.corruptions``): ``x_missing``, ``rgb_missing`` and the shift ``misreg:S``
of bench/data/corruptions.py, plus two registered here: ``night`` (smooth blobs covering 0-40 %
of the image, the whole image with p = 0.15, get V x 0.08 and sigma 0.03 noise, like MFNet's
night frames) and ``misreg_affine:S`` (X only: shift U[-S, S] per axis, rotation +-1.5 deg,
scale +-2 %, zero fill; S = 0 is the identity).

Rendered splits are kept in a small in-process cache, so the cells of a suite share them.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bench.data.corruptions import (
    apply_corruption,
    check_applicable,
    modality_full_scale,
    register_corruption,
)
from bench.data.io import (
    DataError,
    as_grayscale,
    read_channels,
    read_label_image,
    write_png,
)
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import (
    SIGMA_NORM,
    Entry,
    RGBXFolderDataset,
    entries_from_split_file,
    split_files,
)
from bench.data.synrgbx_render import (
    CLASSES,
    FLAVOURS,
    PALETTE,
    SPLIT_CODES,
    XOR_PAIR,
    blob_mask,
    render_scene,
)
from bench.data.transforms import finish_sample, parse_augment

DEFAULT_COUNTS = {"train": 2000, "val": 500, "test": 500}
IGNORE_INDEX = 255


def synrgbx_info(flavour: str | None = None, name: str = "synrgbx") -> DatasetInfo:
    return DatasetInfo(name=name, modalities={"rgb": 3, "x": 1}, classes=list(CLASSES),
                       palette=list(PALETTE), ignore_index=IGNORE_INDEX, x_kind=flavour,
                       protocol={"mode": "whole"})


def parse_counts(counts) -> dict[str, int]:
    if counts is None:
        return dict(DEFAULT_COUNTS)
    if isinstance(counts, (list, tuple)):
        if len(counts) != 3:
            raise DataError(f"synrgbx counts: give [train, val, test], got {counts!r}")
        counts = dict(zip(("train", "val", "test"), counts))
    if not isinstance(counts, dict) or set(counts) - set(DEFAULT_COUNTS):
        raise DataError(f"synrgbx counts: give [train, val, test] or a mapping with keys "
                        f"train, val, test; got {counts!r}")
    out = dict(DEFAULT_COUNTS, **counts)
    for split, n in out.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DataError(f"synrgbx counts.{split} must be a positive integer, got {n!r}")
    return out


# ---------------------------------------------------------------------------- rendered splits

_CACHE: OrderedDict = OrderedDict()
_CACHE_ENTRIES = 8


def render_split(split: str, count: int, *, flavour: str = "depth", size: int = 64,
                 seed: int = 0, boundary: bool = False, ndsm: bool = False) -> dict:
    """``{"rgb": (N, H, W, 3), "x": (N, H, W), "label": (N, H, W)}`` uint8, cached."""
    key = (split, count, flavour, size, seed, boundary, ndsm)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    rgb = np.empty((count, size, size, 3), np.uint8)
    x = np.empty((count, size, size), np.uint8)
    label = np.empty((count, size, size), np.uint8)
    for index in range(count):
        rgb[index], x[index], label[index] = render_scene(seed, split, index, size, flavour,
                                                          boundary, ndsm)
    _CACHE[key] = {"rgb": rgb, "x": x, "label": label}
    while len(_CACHE) > _CACHE_ENTRIES:
        _CACHE.popitem(last=False)
    return _CACHE[key]


def sample_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


@register_dataset("synrgbx")
class SynRGBX(Dataset):
    info = synrgbx_info()

    def __init__(self, split: str = "train", augment=None, corruption=None, *,
                 flavour: str = "depth", size: int = 64, counts=None, seed: int = 0,
                 boundary: bool = False, ndsm: bool = False, modality_dropout: float = 0.1,
                 train_misreg: float = 2.0, corruption_seed: int = 0, root=None):
        if root is not None:
            raise DataError("synrgbx is generated in memory and takes no root; to read an "
                            "exported copy use the dataset 'synrgbx_folder'")
        self.check_options(flavour=flavour, size=size, counts=counts, ndsm=ndsm,
                           modality_dropout=modality_dropout, train_misreg=train_misreg)
        parts = split.split("+")
        unknown = [p for p in parts if p not in SPLIT_CODES]
        if unknown:
            raise DataError(f"synrgbx has no split {unknown[0]!r} (splits: train, val, test; "
                            f"'train+val' joins two)")
        self.split, self.flavour, self.size, self.seed = split, flavour, size, int(seed)
        self.counts = parse_counts(counts)
        self.info = synrgbx_info(flavour)
        self.corruption = check_applicable(corruption, self.info.modalities)
        self.corruption_seed = int(corruption_seed)
        self.augment = parse_augment(augment)
        self.is_train = "train" in parts
        self.modality_dropout = float(modality_dropout) if self.is_train else 0.0
        self.train_misreg = float(train_misreg) if self.is_train else 0.0
        self.options = {"flavour": flavour, "size": size, "seed": self.seed,
                        "boundary": bool(boundary), "ndsm": bool(ndsm)}
        self.parts = [(p, render_split(p, self.counts[p], **self.options)) for p in parts]
        self.index = [(k, i) for k, (_, arrays) in enumerate(self.parts)
                      for i in range(len(arrays["label"]))]

    @staticmethod
    def check_options(flavour: str = "depth", size: int = 64, counts=None, ndsm: bool = False,
                      modality_dropout: float = 0.1, train_misreg: float = 2.0, **_) -> None:
        """Raise ``DataError`` for a bad option value (the suite loader calls this too)."""
        if flavour not in FLAVOURS:
            raise DataError(f"synrgbx flavour {flavour!r} is unknown (known: "
                            f"{', '.join(FLAVOURS)})")
        if not isinstance(size, int) or isinstance(size, bool) or size < 16 or size % 2:
            raise DataError(f"synrgbx size must be an even integer >= 16, got {size!r}")
        if ndsm and flavour != "dsm":
            raise DataError("synrgbx ndsm applies to the dsm flavour only")
        if not 0.0 <= modality_dropout <= 1.0:
            raise DataError(f"synrgbx modality_dropout must be in [0, 1], got {modality_dropout}")
        if train_misreg < 0:
            raise DataError(f"synrgbx train_misreg must be >= 0, got {train_misreg}")
        parse_counts(counts)

    @staticmethod
    def preflight_options(counts=None, **options) -> dict:
        """Options that give the same first item of every split without rendering whole splits
        (bench/run/preflight.py): a scene is a function of (seed, split, index) alone."""
        return dict(options, counts=dict.fromkeys(parse_counts(counts), 1))

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """The rendered sample: rgb (H, W, 3), x (H, W, 1) uint8, label int64 (H, W)."""
        part, i = self.index[index]
        split, arrays = self.parts[part]
        return {"rgb": arrays["rgb"][i], "x": arrays["x"][i][..., None],
                "label": arrays["label"][i].astype(np.int64), "name": sample_name(split, i)}

    def __getitem__(self, index: int) -> dict:
        sample = self.raw(index)
        name = sample.pop("name")
        rng = None
        if self.augment is not None or self.modality_dropout or self.train_misreg:
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
        if self.train_misreg:
            sample["x"] = affine_misregistration(sample["x"], self.train_misreg, rng)
        if self.modality_dropout and rng.random() < self.modality_dropout:
            dropped = "rgb" if rng.random() < 0.5 else "x"
            sample[dropped] = np.zeros_like(sample[dropped])
        if not self.corruption.is_clean:
            sample = apply_corruption(sample, self.corruption, index, self.corruption_seed)
        return finish_sample(sample, SIGMA_NORM, name, self.augment, IGNORE_INDEX, rng)

    def __repr__(self) -> str:
        return (f"SynRGBX(split={self.split!r}, flavour={self.flavour!r}, size={self.size}, "
                f"seed={self.seed}, n={len(self)})")


# -------------------------------------------------------------------------------- corruptions

def affine_misregistration(image: np.ndarray, shift: float, rng: np.random.Generator):
    """(H, W, C) warped by a random affine about the centre: shift U[-s, s] per axis, rotation
    U[-1.5, 1.5] deg, scale U[0.98, 1.02]; bilinear, zero fill, dtype kept. s = 0: unchanged."""
    if shift <= 0:
        return image
    ty, tx = rng.uniform(-shift, shift, 2)
    theta = math.radians(rng.uniform(-1.5, 1.5))
    scale = rng.uniform(0.98, 1.02)
    h, w = image.shape[:2]
    cy, cx = h / 2, w / 2
    # PIL maps each output pixel to an input position: p_in = M^-1 (p_out - c - t) + c
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    a, b, d, e = cos, sin, -sin, cos
    c0 = cx - a * (cx + tx) - b * (cy + ty)
    f0 = cy - d * (cx + tx) - e * (cy + ty)
    out = np.empty_like(image)
    for ch in range(image.shape[2]):
        plane = image[..., ch]
        mode = "L" if plane.dtype == np.uint8 else "F"
        pil = Image.fromarray(plane if mode == "L" else plane.astype(np.float32), mode=mode)
        warped = pil.transform((w, h), Image.AFFINE, (a, b, c0, d, e, f0),
                               resample=Image.BILINEAR, fillcolor=0)
        out[..., ch] = np.asarray(warped).astype(image.dtype)
    return out


@register_corruption("misreg_affine", parameter="S", needs=("x",))
def _misreg_affine(sample, shift, rng, full_scale):
    sample["x"] = affine_misregistration(sample["x"], shift, rng)
    return sample


@register_corruption("night", needs=("rgb",))
def _night(sample, param, rng, full_scale):
    """Dark blobs (0-40 % of the image, all of it with p = 0.15): V x 0.08 + sigma 0.03 noise."""
    rgb = sample["rgb"]
    h, w = rgb.shape[:2]
    side = max(h, w)
    if rng.random() < 0.15:
        dark = np.ones((h, w), bool)
    else:
        dark = blob_mask(rng, side, rng.uniform(0.0, 0.4))[:h, :w]
    scale = modality_full_scale(rgb, full_scale.get("rgb"))
    out = rgb.astype(np.float64)
    noise = rng.normal(0.0, 0.03 * scale, out.shape)
    out[dark] = out[dark] * 0.08 + noise[dark]
    if rgb.dtype.kind in "ui":
        out = np.clip(np.rint(out), 0, scale)
    sample["rgb"] = out.astype(rgb.dtype)
    return sample


# ----------------------------------------------------------------------------- on-disk layout

def export_synrgbx(root: str | Path, *, flavour: str = "depth", size: int = 64, counts=None,
                   seed: int = 0, boundary: bool = False, ndsm: bool = False) -> Path:
    """Write the Sigma/CMX layout: ``{RGB,Modal,Label}/<id>.png``, ``train.txt val.txt
    test.txt`` (one stem per line) and ``meta.json`` (classes, palette, flavour, parameters)."""
    root = Path(root)
    counts = parse_counts(counts)
    options = {"flavour": flavour, "size": size, "seed": seed, "boundary": boundary,
               "ndsm": ndsm}
    for split, count in counts.items():
        arrays = render_split(split, count, **options)
        stems = []
        for i in range(count):
            stem = sample_name(split, i)
            write_png(root / "RGB" / f"{stem}.png", arrays["rgb"][i], compress_level=1)
            write_png(root / "Modal" / f"{stem}.png", arrays["x"][i], compress_level=1)
            write_png(root / "Label" / f"{stem}.png", arrays["label"][i], compress_level=1)
            stems.append(stem)
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    meta = {"dataset": "SynRGBX", "classes": list(CLASSES), "palette": [list(c) for c in PALETTE],
            "ignore_index": IGNORE_INDEX, "xor_pair": list(XOR_PAIR), "counts": counts,
            **options, "design": "docs/datasets.md"}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


@register_dataset("synrgbx_folder")
class SynRGBXFolder(RGBXFolderDataset):
    """An exported SynRGBX copy (``export_synrgbx``) read from disk."""
    info = synrgbx_info(name="synrgbx_folder")
    layouts = ("sigma",)
    layout_markers = {"sigma": "RGB/ Modal/ Label/ train.txt test.txt meta.json"}

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        return "sigma" if (root / "RGB").is_dir() and (root / "Modal").is_dir() else None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        return split_files(root)

    def make_info(self) -> DatasetInfo:
        meta_path = self.root / "meta.json"
        flavour = None
        if meta_path.is_file():
            flavour = json.loads(meta_path.read_text()).get("flavour")
        return synrgbx_info(flavour, name="synrgbx_folder")

    def split_source(self, split: str) -> Path:
        return self.root / f"{split}.txt"

    def list_entries(self, split: str) -> list[Entry]:
        folders = {"rgb": self.root / "RGB", "x": self.root / "Modal",
                   "label": self.root / "Label"}
        return entries_from_split_file("SynRGBX", self.split_source(split), folders,
                                       {role: ".png" for role in folders})

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        return {"rgb": read_channels(entry.files["rgb"], 3, "an RGB PNG"),
                "x": as_grayscale(read_label_image(entry.files["x"]), entry.files["x"]),
                "label": read_label_image(entry.files["label"])}
