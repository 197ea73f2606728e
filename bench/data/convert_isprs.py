"""ISPRS Vaihingen / Potsdam raw tiles -> mmseg crops with matching DSM crops.

Reproduces mmseg's ``tools/dataset_converters/{vaihingen,potsdam}.py`` and adds the DSM:

- Inputs, found anywhere below RAW_DIR (or inside its zips): Vaihingen ``top/
  top_mosaic_09cm_area{N}.tif`` (IRRG), ``top_mosaic_09cm_area{N}_noBoundary.tif`` (eroded
  colour GT; ``labels=full`` takes ``gts_for_participants/top_mosaic_09cm_area{N}.tif``),
  ``dsm_09cm_matching_area{N}.tif``; Potsdam ``top_potsdam_{i}_{j}_RGB.tif`` (or ``_RGBIR.tif``,
  first three bands), ``top_potsdam_{i}_{j}_label_noBoundary.tif`` (``labels=full``:
  ``_label.tif``), ``dsm_potsdam_{ii}_{jj}_normalized_lastools.jpg`` (nDSM, indices zero-padded;
  ``dsm=dsm`` takes ``dsm_potsdam_{ii}_{jj}.tif``).
- Labels: colours hashed as 2B + 3G + 4R (mmcv reads BGR) -> 0 black / undefined, 1 impervious,
  2 building, 3 low vegetation, 4 tree, 5 car, 6 clutter; any other colour becomes 0 as in
  mmseg (the summary counts such pixels).
- Crops: mmseg's grid, whose box origins step by ``clip_size`` (not the stride): a
  non-overlapping grid plus a last crop aligned to the far edge; ``num_rows/cols`` come from the
  stride, so extra boxes repeat the edge crop and overwrite the same file. Names
  ``area1_{x0}_{y0}_{x1}_{y1}.png`` and ``2_10_{x0}_{y0}_{x1}_{y1}.png``. ``clip_size=0`` writes
  whole tiles (MS2MNet evaluates whole tiles).
- DSM (our convention; mmseg has none): the tile's DSM or nDSM min-max scaled to [0, 1] over the
  tile (SSRS / MS2MNet), stored as 16-bit PNG in ``dsm_dir/<split>/`` under the crop's name. A
  DSM a few pixels narrower than its tile (Potsdam ``dsm_potsdam_03_13_normalized_lastools.jpg``
  is 5999 wide) is padded by repeating its edge.
- Splits: ``split=mmseg`` (mmseg's train / val tiles) or ``ms2mnet`` (MS2MNet's train / test
  tiles: Vaihingen test 5, 21, 15, 30; Potsdam test 4_10, 5_11, 2_11, 3_10, 6_11, 7_12).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from bench.data.convert_base import ConvertSummary, register_converter, search_roots
from bench.data.io import DataError, MissingPathError, read_image, write_png

#: RGB colours of the 7 codes (0 = undefined); mmseg lists them in BGR.
ISPRS_COLOURS_RGB = [(0, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
                     (255, 255, 0), (255, 0, 0)]

SPLITS = {
    "vaihingen": {
        "mmseg": {"train": ["1", "3", "5", "7", "11", "13", "15", "17", "21", "23", "26", "28",
                            "30", "32", "34", "37"], "val": None},
        "ms2mnet": {"train": ["1", "3", "23", "26", "7", "11", "13", "28", "17", "32", "34", "37"],
                    "test": ["5", "21", "15", "30"]},
    },
    "potsdam": {
        "mmseg": {"train": ["2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11",
                            "4_12", "5_10", "5_11", "5_12", "6_10", "6_11", "6_12", "6_7", "6_8",
                            "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9"], "val": None},
        "ms2mnet": {"train": ["6_10", "7_10", "2_12", "3_11", "2_10", "7_8", "5_10", "3_12",
                              "5_12", "7_11", "7_9", "6_9", "7_7", "4_12", "6_8", "6_12", "6_7",
                              "4_11"],
                    "test": ["4_10", "5_11", "2_11", "3_10", "6_11", "7_12"]},
    },
}


def colour_label_to_index(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """mmseg's colour hash 2B + 3G + 4R -> codes 0..6; returns (codes, unknown-colour pixels)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise DataError("ISPRS label must be an RGB colour image", kind="wrong channel count")
    rgb = rgb[..., :3].astype(np.int64)
    hashed = 2 * rgb[..., 2] + 3 * rgb[..., 1] + 4 * rgb[..., 0]
    codes = np.zeros(hashed.shape, dtype=np.uint8)
    known = np.zeros(hashed.shape, dtype=bool)
    for index, (r, g, b) in enumerate(ISPRS_COLOURS_RGB):
        match = hashed == 2 * b + 3 * g + 4 * r
        codes[match] = index
        known |= match
    return codes, int((~known).sum())


def mmseg_crop_boxes(height: int, width: int, clip: int, stride: int) -> list[tuple[int, ...]]:
    """Boxes (x0, y0, x1, y1) exactly as mmseg ``clip_big_image`` computes them (with repeats)."""
    if clip <= 0:
        return [(0, 0, width, height)]

    def count(length):
        steps = math.ceil((length - clip) / stride)
        return steps if steps * stride + clip >= length else steps + 1

    boxes = []
    for y in range(count(height) + 1):
        for x in range(count(width) + 1):
            x0, y0 = x * clip, y * clip
            x0 += width - x0 - clip if x0 + clip > width else 0
            y0 += height - y0 - clip if y0 + clip > height else 0
            boxes.append((x0, y0, min(x * clip + clip, width), min(y * clip + clip, height)))
    return boxes


def _tile_files(roots, pattern: str, folder: str | None = None) -> dict[str, Path]:
    regex = re.compile(pattern)
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            match = regex.fullmatch(path.name)
            if match and path.is_file() and (folder is None or path.parent.name == folder):
                found.setdefault("_".join(str(int(g)) for g in match.groups()), path)
    return found


def _fit_dsm(dsm: np.ndarray, shape: tuple[int, int], path: Path) -> np.ndarray:
    dsm = dsm[..., 0] if dsm.ndim == 3 else dsm
    if dsm.shape == shape:
        return dsm
    dh, dw = shape[0] - dsm.shape[0], shape[1] - dsm.shape[1]
    if abs(dh) > 8 or abs(dw) > 8:
        raise DataError(f"DSM is {dsm.shape[1]}x{dsm.shape[0]} but its tile is "
                        f"{shape[1]}x{shape[0]}", path, kind="size mismatch")
    dsm = dsm[:shape[0], :shape[1]]
    return np.pad(dsm, ((0, max(dh, 0)), (0, max(dw, 0))), mode="edge")


def _dsm_to_unit_uint16(dsm: np.ndarray) -> np.ndarray:
    dsm = dsm.astype(np.float64)
    low, high = np.nanmin(dsm), np.nanmax(dsm)
    scaled = (dsm - low) / (high - low) if high > low else np.zeros_like(dsm)
    return np.rint(np.nan_to_num(scaled) * 65535).astype(np.uint16)


def convert_isprs(dataset: str, raw_dir: Path, out_dir: Path, patterns: dict, split: str,
                  clip_size: int, stride_size: int, with_dsm: bool) -> ConvertSummary:
    if split not in SPLITS[dataset]:
        raise DataError(f"{dataset} converter split must be one of "
                        f"{', '.join(SPLITS[dataset])}, got {split!r}")
    summary = ConvertSummary(dataset, out_dir)
    unknown_pixels = 0
    with search_roots(raw_dir) as roots:
        images = _tile_files(roots, *patterns["image"])
        labels = _tile_files(roots, *patterns["label"])
        dsms = _tile_files(roots, *patterns["dsm"]) if with_dsm else {}
        if not images:
            raise MissingPathError(f"no {dataset} image tiles ({patterns['image'][0]}) found",
                                   raw_dir)
        split_lists = SPLITS[dataset][split]
        for tile in sorted(images, key=lambda t: [int(p) for p in t.split("_")]):
            target = next((s for s, ids in split_lists.items() if ids and tile in ids), None)
            if target is None:
                target = next((s for s, ids in split_lists.items() if ids is None), None)
            if target is None or tile not in labels:
                reason = "no label file" if tile not in labels else f"not in the {split} split"
                summary.notes.append(f"tile {tile}: {reason}; skipped")
                continue
            if with_dsm and tile not in dsms:
                raise MissingPathError(f"no DSM for tile {tile} ({patterns['dsm'][0]})", raw_dir)
            image = read_image(images[tile])[..., :3]
            try:
                codes, unknown = colour_label_to_index(read_image(labels[tile]))
            except DataError as error:
                raise DataError(error.message, labels[tile], kind=error.kind) from None
            unknown_pixels += unknown
            height, width = codes.shape
            if image.shape[:2] != (height, width):
                raise DataError(f"image {image.shape[1]}x{image.shape[0]} vs label "
                                f"{width}x{height}", labels[tile], kind="size mismatch")
            dsm = None
            if with_dsm:
                dsm = _dsm_to_unit_uint16(_fit_dsm(read_image(dsms[tile]), (height, width),
                                                   dsms[tile]))
            prefix = f"area{tile}" if dataset == "vaihingen" else tile
            names = set()
            for x0, y0, x1, y1 in mmseg_crop_boxes(height, width, clip_size, stride_size):
                name = f"{prefix}_{x0}_{y0}_{x1}_{y1}.png"
                names.add(name)
                write_png(out_dir / "img_dir" / target / name,
                          np.ascontiguousarray(image[y0:y1, x0:x1]))
                write_png(out_dir / "ann_dir" / target / name, np.ascontiguousarray(codes[y0:y1,
                                                                                          x0:x1]))
                if dsm is not None:
                    write_png(out_dir / "dsm_dir" / target / name,
                              np.ascontiguousarray(dsm[y0:y1, x0:x1]))
            summary.written[target] = summary.written.get(target, 0) + len(names)
    if unknown_pixels:
        summary.notes.append(f"{unknown_pixels} label pixels had colours outside the ISPRS "
                             "palette and became 0 (ignored), as in mmseg")
    return summary


@register_converter("vaihingen")
def convert_vaihingen(raw_dir: Path, out_dir: Path, split: str = "mmseg", clip_size: int = 512,
                      stride_size: int = 256, labels: str = "eroded",
                      with_dsm: bool = True) -> ConvertSummary:
    label = (r"top_mosaic_09cm_area(\d+)_noBoundary\.tif", None) if labels == "eroded" else \
        (r"top_mosaic_09cm_area(\d+)\.tif", "gts_for_participants")
    patterns = {"image": (r"top_mosaic_09cm_area(\d+)\.tif", "top"), "label": label,
                "dsm": (r"dsm_09cm_matching_area(\d+)\.tif", None)}
    return convert_isprs("vaihingen", raw_dir, out_dir, patterns, split, int(clip_size),
                         int(stride_size), bool(with_dsm))


@register_converter("potsdam")
def convert_potsdam(raw_dir: Path, out_dir: Path, split: str = "mmseg", clip_size: int = 512,
                    stride_size: int = 256, labels: str = "eroded", bands: str = "RGB",
                    dsm: str = "ndsm", with_dsm: bool = True) -> ConvertSummary:
    if bands not in ("RGB", "RGBIR", "IRRG"):
        raise DataError(f"potsdam bands must be RGB, RGBIR or IRRG, got {bands!r}")
    label = (r"top_potsdam_(\d+)_(\d+)_label_noBoundary\.tif", None) if labels == "eroded" else \
        (r"top_potsdam_(\d+)_(\d+)_label\.tif", None)
    dsm_pattern = r"dsm_potsdam_(\d+)_(\d+)_normalized_lastools\.jpg" if dsm == "ndsm" else \
        r"dsm_potsdam_(\d+)_(\d+)\.tif"
    patterns = {"image": (rf"top_potsdam_(\d+)_(\d+)_{bands}\.tif", None), "label": label,
                "dsm": (dsm_pattern, None)}
    return convert_isprs("potsdam", raw_dir, out_dir, patterns, split, int(clip_size),
                         int(stride_size), bool(with_dsm))
