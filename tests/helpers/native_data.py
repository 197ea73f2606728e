"""Tiny datasets in each real dataset's exact native layout, with the values a loader must decode.

Every ``make_*`` writes files under ``root`` with the upstream names, formats, bit depths and
split-file syntax, and returns ``{sample name: expected}`` where ``expected`` holds the raw
arrays the loader must produce before normalisation: "rgb" (H, W, C), "x" (H, W, C) and "label"
(H, W) int64 after the paper's decoding. Label edge cases are planted on purpose: void 0 -> 255
(NYU/SUN), ISPRS black pixels, LoveDA 0, Hunan 255 and 7, WHU x10.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.io import write_jpeg, write_tiff
from bench.data.io import write_png as _write_png


def write_png(path, array):
    return _write_png(path, array, compress_level=1)  # random content: fast, exact


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _labels(rng, shape, values) -> np.ndarray:
    """Random labels drawn from ``values`` with each value present at least once."""
    label = rng.choice(np.asarray(values), size=shape)
    flat = label.reshape(-1)
    flat[:len(values)] = values
    return label


def _jpeg_roundtrip(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# ------------------------------------------------------------------------------------- RGB-T

MFNET_SPLITS = {"train": ["00001D", "00002N"], "val": ["00003D"], "test": ["01234N"],
                "test_night": ["01234N"]}


def make_mfnet(root: Path, layout: str = "native", full_size: str | None = "00001D") -> dict:
    """MFNet: RGBA PNGs (thermal in channel 3) + uint8 labels 0..8; or Sigma's RGB/Modal/Label."""
    rng = _rng(1)
    expected = {}
    names = sorted({n for names in MFNET_SPLITS.values() for n in names})
    for name in names:
        shape = (480, 640) if name == full_size else (12, 16)
        rgba = rng.integers(0, 256, shape + (4,), dtype=np.uint8)
        label = _labels(rng, shape, list(range(9))).astype(np.uint8)
        if layout == "native":
            write_png(root / "images" / f"{name}.png", rgba)
            write_png(root / "labels" / f"{name}.png", label)
        else:
            write_png(root / "RGB" / f"{name}.png", np.ascontiguousarray(rgba[..., :3]))
            write_png(root / "Modal" / f"{name}.png", np.ascontiguousarray(rgba[..., 3]))
            write_png(root / "Label" / f"{name}.png", label)
        expected[name] = {"rgb": rgba[..., :3], "x": rgba[..., 3:], "label": label.astype(np.int64)}
    if layout == "native":
        for split, split_names in MFNET_SPLITS.items():
            write_lines(root / f"{split}.txt", split_names)
    else:
        write_lines(root / "train2.txt", MFNET_SPLITS["train"] + MFNET_SPLITS["val"])
        write_lines(root / "test.txt", MFNET_SPLITS["test"])
    return expected


PST_SPLITS = {"train": ["31_bag1a_rect_rgb_frame0000000007", "32_bag2_rect_rgb_frame0000000001"],
              "test": ["45_bag3_rect_rgb_frame0000000300"]}


def make_pst900(root: Path, layout: str = "native", full_size: bool = True) -> dict:
    """PST900: rgb uint8, thermal uint8 with 0-valued parallax holes (one sample stored as grey
    replicated to 3 channels), labels uint8 0..4."""
    rng = _rng(2)
    expected = {}
    first = True
    for split, names in PST_SPLITS.items():
        for name in names:
            shape = (720, 1280) if (full_size and first) else (10, 14)
            rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            thermal = rng.integers(1, 256, shape, dtype=np.uint8)
            thermal[: shape[0] // 3, : shape[1] // 4] = 0  # parallax hole
            label = _labels(rng, shape, list(range(5))).astype(np.uint8)
            stored_thermal = np.repeat(thermal[..., None], 3, axis=2) if first else thermal
            if layout == "native":
                base = root / split
                write_png(base / "rgb" / f"{name}.png", rgb)
                write_png(base / "thermal" / f"{name}.png", stored_thermal)
                write_png(base / "labels" / f"{name}.png", label)
                write_png(base / "thermal_raw" / f"{name}.png",
                          thermal.astype(np.uint16) * 64)
            else:
                write_png(root / "rgb_resize" / f"{name}.png", rgb)
                write_png(root / "thermal_resize" / f"{name}.png", stored_thermal)
                write_png(root / "labels_resize" / f"{name}.png", label)
            expected[name] = {"rgb": rgb, "x": thermal[..., None], "label": label.astype(np.int64)}
            first = False
    if layout == "sigma":
        for split, names in PST_SPLITS.items():
            write_lines(root / f"{split}.txt", names)
    return expected


# ------------------------------------------------------------------------------------- RGB-D

def make_indoor(root: Path, dataset: str, layout: str = "dformer", full_size: bool = True) -> dict:
    """DFormer's NYUDepthv2 / SUNRGBD release: RGB/*.jpg, 8-bit RGBA grey depth PNGs
    (plt.imsave), uint8 labels with 0 = void; DFormer or Sigma split files."""
    rng = _rng(3)
    num_classes = 40 if dataset == "nyudv2" else 37
    if dataset == "nyudv2":
        folders = {"rgb": "RGB", "x": "Depth", "label": "Label"}
    elif layout == "sigma":
        folders = {"rgb": "RGB_resize", "x": "Depth_resize", "label": "labels_resize"}
    else:
        folders = {"rgb": "RGB", "x": "Depth", "label": "labels"}
    splits = {"train": ["1", "2"], "test": ["3"]}
    expected = {}
    for names in splits.values():
        for name in names:
            shape = (480, 640) if (full_size and name == "1") else (9, 11)
            rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            depth = rng.integers(0, 256, shape, dtype=np.uint8)
            rgba_depth = np.stack([depth, depth, depth, np.full_like(depth, 255)], axis=2)
            raw = _labels(rng, shape, list(range(num_classes + 1))).astype(np.uint8)
            rgb_path = write_jpeg(root / folders["rgb"] / f"{name}.jpg", rgb)
            write_png(root / folders["x"] / f"{name}.png", rgba_depth)
            write_png(root / folders["label"] / f"{name}.png", raw)
            label = raw.astype(np.int64) - 1
            label[raw == 0] = 255  # Sigma gt - 1 in uint8: void wraps to 255
            expected[name] = {"rgb": _jpeg_roundtrip(rgb_path), "x": depth[..., None],
                              "label": label}
    for split, names in splits.items():
        if layout == "sigma":
            write_lines(root / f"{split}2.txt", names)
        else:
            write_lines(root / f"{split}.txt",
                        [f"{folders['rgb']}/{n}.jpg {folders['label']}/{n}.png" for n in names])
    return expected


# ----------------------------------------------------------------------------- remote sensing

WHU_TILES = {"train": ["NH49E001013", "NH49E001014"], "test": ["NH49E002015"]}


def make_whu_tiles(root: Path, tile_shape=(520, 600)) -> dict:
    """Raw WHU-OPT-SAR tiles (4-band optical, 1-band SAR, labels x10) + the division file with
    ``train:`` / ``test:`` headers; expected values are per 256² crop ``<tile>_<k>``."""
    rng = _rng(4)
    expected = {}
    for names in WHU_TILES.values():
        for tile in names:
            optical = rng.integers(0, 256, tile_shape + (4,), dtype=np.uint8)
            sar = rng.integers(0, 256, tile_shape, dtype=np.uint8)
            classes = _labels(rng, tile_shape, list(range(8)))
            write_tiff(root / "optical" / f"{tile}.tif", optical)
            write_tiff(root / "sar" / f"{tile}.tif", sar)
            write_tiff(root / "lbl" / f"{tile}.tif", (classes * 10).astype(np.uint8))
            rows, cols = tile_shape[0] // 256, tile_shape[1] // 256
            for row in range(rows):
                for col in range(cols):
                    box = (slice(row * 256, row * 256 + 256), slice(col * 256, col * 256 + 256))
                    label = classes[box].astype(np.int64) - 1
                    label[classes[box] == 0] = 255
                    expected[f"{tile}_{row * cols + col}"] = {
                        "rgb": optical[box], "x": sar[box][..., None], "label": label}
    text = "train:\n" + "\n".join(f"{t}.tif" for t in WHU_TILES["train"])
    text += "\ntest: " + ", ".join(f"{t}.tif" for t in WHU_TILES["test"]) + "\n"
    (root / "The division of the dataset.txt").write_text(text)
    return expected


def make_whu_mmseg(root: Path) -> dict:
    """Mamba-Diffusion's ``cat/`` (5 bands: R, G, B, NIR, SAR) + ``label/`` (0..7) layout."""
    rng = _rng(5)
    expected = {}
    for split, names in {"train": ["NH49E001013_0", "NH49E001013_1"], "test": ["X_7"]}.items():
        for name in names:
            image = rng.integers(0, 256, (8, 8, 5), dtype=np.uint8)
            classes = _labels(rng, (8, 8), list(range(8))).astype(np.uint8)
            write_tiff(root / "cat" / split / f"{name}.tif", image)
            write_tiff(root / "label" / split / f"{name}.tif", classes)
            label = classes.astype(np.int64) - 1
            label[classes == 0] = 255
            expected[name] = {"rgb": image[..., :4], "x": image[..., 4:], "label": label}
    return expected


def make_hunan_native(root: Path) -> dict:
    """SEN12MS-style Hunan patches: s2 (13 bands uint16), s1 (2 bands float32 dB), dem, lc codes
    with 255 (-> ignore), 11 (-> 7 -> merged into 6) and 0 (-> ignore)."""
    rng = _rng(6)
    table = np.array([255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 6, 255])
    expected = {}
    for split, ids in {"train": ["1", "2"], "val": ["3"], "test": ["4"]}.items():
        for patch in ids:
            s2 = rng.integers(0, 10000, (6, 7, 13), dtype=np.uint16)
            s1 = rng.normal(-12, 4, (6, 7, 2)).astype(np.float32)
            dem = rng.uniform(50, 900, (6, 7)).astype(np.float32)
            codes = _labels(rng, (6, 7), list(range(12)) + [255]).astype(np.uint8)
            base = root / split
            write_tiff(base / "s2" / f"s2_{patch}.tif", s2)
            write_tiff(base / "s1" / f"s1_{patch}.tif", s1)
            write_tiff(base / "dem" / f"dem_{patch}.tif", dem)
            write_tiff(base / "lc" / f"lc_{patch}.tif", codes)
            expected[patch] = {"rgb": s2, "x": s1, "dem": dem,
                               "label": table[np.where(codes == 255, 12, codes)]}
    return expected


def make_hunan_mmseg(root: Path) -> dict:
    """Mamba-Diffusion's ``cat1/`` (15 bands float32) + ``lbl/`` (0 = ignore, 1..7) layout."""
    rng = _rng(7)
    expected = {}
    for split, names in {"train": ["a"], "val": ["b"], "test": ["c"]}.items():
        for name in names:
            image = rng.normal(500, 300, (5, 6, 15)).astype(np.float32)
            raw = _labels(rng, (5, 6), list(range(8))).astype(np.uint8)
            write_tiff(root / "cat1" / split / f"{name}.tif", image)
            write_tiff(root / "lbl" / split / f"{name}.tif", raw)
            label = raw.astype(np.int64) - 1
            label[raw == 0] = 255
            expected[name] = {"rgb": image[..., :13], "x": image[..., 13:], "label": label}
    return expected


def make_isprs_mmseg(root: Path, names=None, full_size: bool = True) -> dict:
    """mmseg crops (img_dir/ann_dir, black = 0 -> ignore) + our dsm_dir (16-bit PNG)."""
    rng = _rng(8)
    names = names or {"train": ["area1_0_0_512_512", "area1_512_0_1024_512"],
                      "val": ["area2_0_0_512_512"]}
    expected = {}
    first = True
    for split, crops in names.items():
        for crop in crops:
            shape = (512, 512) if (full_size and first) else (10, 12)
            image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            raw = _labels(rng, shape, list(range(7))).astype(np.uint8)
            dsm = rng.integers(0, 65536, shape, dtype=np.uint16)
            write_png(root / "img_dir" / split / f"{crop}.png", image)
            write_png(root / "ann_dir" / split / f"{crop}.png", raw)
            write_png(root / "dsm_dir" / split / f"{crop}.png", dsm)
            label = raw.astype(np.int64) - 1
            label[raw == 0] = 255
            expected[crop] = {"rgb": image, "x": (dsm.astype(np.float32) / 65535)[..., None],
                              "label": label}
            first = False
    return expected


def make_loveda(root: Path, layout: str = "native") -> dict:
    """LoveDA download (Train/Val/Test x Urban/Rural x images_png/masks_png) or mmseg layout;
    masks 0 = no-data (-> ignore), 1..7 -> 0..6; Test has no masks."""
    rng = _rng(9)
    expected = {}
    ids = {("train", "Urban"): ["1366"], ("train", "Rural"): ["0"], ("val", "Urban"): ["3514"],
           ("val", "Rural"): ["2522"], ("test", "Urban"): ["5167"], ("test", "Rural"): ["4191"]}
    for (split, scene), names in ids.items():
        for name in names:
            image = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
            raw = _labels(rng, (8, 9), list(range(8))).astype(np.uint8)
            if layout == "native":
                base = root / split.capitalize() / scene
                write_png(base / "images_png" / f"{name}.png", image)
                if split != "test":
                    write_png(base / "masks_png" / f"{name}.png", raw)
            else:
                write_png(root / "img_dir" / split / f"{name}.png", image)
                if split != "test":
                    write_png(root / "ann_dir" / split / f"{name}.png", raw)
            label = raw.astype(np.int64) - 1
            label[raw == 0] = 255
            expected[name] = {"rgb": image, "label": label, "scene": scene, "split": split}
    return expected


# ---------------------------------------------------------------------------------- referring

def make_refcoco(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> dict:
    """REFER layout: pickled refs, COCO instances.json (polygons and RLE), train2014 JPEGs."""
    rng = _rng(10)
    images = []
    for image_id, (h, w) in {1: (20, 24), 2: (16, 16)}.items():
        name = f"COCO_train2014_{image_id:012d}.jpg"
        write_jpeg(root / "train2014" / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    annotations = [
        # axis-aligned rectangle polygon: Pillow fills columns 2..10 and rows 3..8 inclusive
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[2, 3, 10, 3, 10, 8, 2, 8]]},
        # uncompressed RLE, column-major: 5 zeros, 4 ones, rest zeros over a 16x16 image
        {"id": 102, "image_id": 2, "category_id": 2, "iscrowd": 1,
         "segmentation": {"size": [16, 16], "counts": [5, 4, 247]}},
    ]
    refs = [
        {"ref_id": 0, "ann_id": 101, "image_id": 1, "category_id": 1, "split": "train",
         "file_name": "COCO_train2014_000000000001_101.jpg", "sent_ids": [0, 1],
         "sentences": [{"tokens": ["left", "dog"], "raw": "Left dog", "sent": "left dog",
                        "sent_id": 0},
                       {"tokens": ["the", "brown", "dog"], "raw": "the brown dog",
                        "sent": "the brown dog", "sent_id": 1}]},
        {"ref_id": 1, "ann_id": 102, "image_id": 2, "category_id": 2, "split": "val",
         "file_name": "COCO_train2014_000000000002_102.jpg", "sent_ids": [2],
         "sentences": [{"tokens": ["cat", "on", "left"], "raw": "cat on left",
                        "sent": "cat on left", "sent_id": 2}]},
    ]
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]}))
    with (folder / f"refs({split_by}).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    mask_train = np.zeros((20, 24), dtype=np.int64)
    mask_train[3:9, 2:11] = 1
    mask_val = np.zeros(256, dtype=np.int64)
    mask_val[5:9] = 1
    return {"0_0": {"label": mask_train, "sentence": "left dog"},
            "0_1": {"label": mask_train, "sentence": "the brown dog"},
            "1_2": {"label": mask_val.reshape(16, 16).T, "sentence": "cat on left"}}


def assert_raw_equal(dataset, expected):
    """load_raw of every entry equals the fixture's expected arrays exactly."""
    assert len(dataset) > 0
    for entry in dataset.entries:
        sample = dataset.load_raw(entry)
        truth = expected[entry.name]
        for key in ("rgb", "x", "label"):
            if key in truth and key in sample:
                np.testing.assert_array_equal(sample[key], truth[key],
                                              err_msg=f"{entry.name} {key}")
        assert sample["label"].dtype == np.int64
