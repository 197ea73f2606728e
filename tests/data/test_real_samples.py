"""Format smoke tests on a few real MFNet / PST900 files from ``shared/data/real`` (skipped
when absent, e.g. in a user's clone). ``SSMBENCH_REAL_DATA`` points elsewhere."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.data import build_dataset
from bench.data.checks import require_ok
from bench.data.io import read_image, write_png

REPO = Path(__file__).resolve().parents[2]


def real_data_dir() -> Path | None:
    candidates = [os.environ.get("SSMBENCH_REAL_DATA"), REPO.parent / "shared/data/real",
                  REPO.parent.parent / "shared/data/real"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "mfnet").is_dir():
            return Path(candidate)
    return None


REAL = real_data_dir()
pytestmark = pytest.mark.skipif(REAL is None, reason="shared/data/real not present")


def test_mfnet_real_rgba_frames(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("01234N", "01477D"):
        shutil.copyfile(REAL / "mfnet" / f"{name}.png", tmp_path / "images" / f"{name}.png")
        write_png(tmp_path / "labels" / f"{name}.png", np.zeros((480, 640), np.uint8))
    (tmp_path / "test.txt").write_text("01234N\n01477D\n")
    dataset = build_dataset("mfnet", root=tmp_path, split="test")
    require_ok("mfnet", tmp_path, ["test"])
    for entry in dataset.entries:
        rgba = read_image(REAL / "mfnet" / f"{entry.name}.png")
        sample = dataset.load_raw(entry)
        assert rgba.shape == (480, 640, 4) and rgba.dtype == np.uint8
        np.testing.assert_array_equal(sample["rgb"], rgba[..., :3])
        np.testing.assert_array_equal(sample["x"][..., 0], rgba[..., 3])
    night = dataset.load_raw(dataset.entries[0])
    # thermal carries a real signal (not a copy of an RGB channel or alpha = 255)
    assert 0 < night["x"].std() and not (night["x"] == 255).all()
    assert not np.array_equal(night["x"][..., 0], night["rgb"][..., 0])
    item = dataset[0]
    assert item["rgb"].shape == (3, 480, 640) and item["x"].shape == (1, 480, 640)


def test_pst900_real_sample_in_native_layout(tmp_path):
    name = "utils_rgb_loader"
    split = tmp_path / "test"
    for folder in ("rgb", "thermal", "labels"):
        (split / folder).mkdir(parents=True)
    shutil.copyfile(REAL / "pst900" / "utils_rgb_loader.png", split / "rgb" / f"{name}.png")
    shutil.copyfile(REAL / "pst900" / "utils_thermal_loader.png", split / "thermal" / f"{name}.png")
    colours = read_image(REAL / "pst900" / "utils_label_vis.png")
    palette = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2, (0, 0, 255): 3}
    label = np.full(colours.shape[:2], 99, np.uint8)
    for colour, index in palette.items():
        label[(colours == colour).all(axis=2)] = index
    assert (label != 99).all(), "the visualisation holds exactly four pure colours"
    write_png(split / "labels" / f"{name}.png", label)
    dataset = build_dataset("pst900", root=tmp_path, split="test")
    require_ok("pst900", tmp_path, ["test"])
    sample = dataset.load_raw(dataset.entries[0])
    assert sample["rgb"].shape == (720, 1280, 3) and sample["x"].shape == (720, 1280, 1)
    assert (sample["x"] == 0).mean() > 0.01  # parallax holes
    assert set(np.unique(sample["label"])) <= {0, 1, 2, 3}
    filled = build_dataset("pst900", root=tmp_path, split="test", thermal_holes="fill")
    assert (filled.load_raw(filled.entries[0])["x"] > 0).all()
