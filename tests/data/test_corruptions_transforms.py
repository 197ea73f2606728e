"""Robustness corruptions (raw domain, seeded) and train transforms (aligned across modalities)."""
import numpy as np
import pytest
import torch

from bench.data import build_dataset
from bench.data.corruptions import (
    UnknownCorruptionError,
    apply_corruption,
    parse_corruption,
    shift_with_zero_fill,
)
from bench.data.transforms import (
    AugmentConfigError,
    augment_sample,
    keep_ratio_size,
    parse_augment,
    photometric_distortion,
)
from tests.helpers.native_data import make_mfnet


def sample(height=6, width=7):
    rng = np.random.default_rng(0)
    return {"rgb": rng.integers(1, 256, (height, width, 3), dtype=np.uint8),
            "x": rng.integers(1, 256, (height, width, 1), dtype=np.uint8),
            "label": rng.integers(0, 5, (height, width))}


def test_parse_and_unknown_names():
    assert parse_corruption(None).is_clean and parse_corruption("clean").is_clean
    misreg = parse_corruption("misreg:4")
    assert misreg.param == 4.0 and misreg.name == "misreg:4"
    with pytest.raises(UnknownCorruptionError, match=r"unknown corruption 'fog'.*x_missing"):
        parse_corruption("fog")
    with pytest.raises(UnknownCorruptionError, match="misreg:S"):
        parse_corruption("misreg:far")
    with pytest.raises(UnknownCorruptionError, match="takes no parameter"):
        parse_corruption("x_missing:3")


def test_missing_modalities_read_zero_and_leave_the_rest():
    raw = sample()
    x_missing = apply_corruption(raw, "x_missing", index=3, seed=0)
    assert not x_missing["x"].any() and x_missing["x"].dtype == np.uint8
    np.testing.assert_array_equal(x_missing["rgb"], raw["rgb"])
    np.testing.assert_array_equal(x_missing["label"], raw["label"])
    rgb_missing = apply_corruption(raw, "rgb_missing", index=3, seed=0)
    assert not rgb_missing["rgb"].any() and rgb_missing["x"] is raw["x"]


def test_shift_with_zero_fill():
    array = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(shift_with_zero_fill(array, 1, -2),
                                  [[0, 0, 0, 0], [2, 3, 0, 0], [6, 7, 0, 0]])


def test_misregistration_is_seeded_per_sample_and_shifts_only_x():
    raw = sample(20, 20)
    first = apply_corruption(raw, "misreg:4", index=5, seed=1)
    again = apply_corruption(raw, "misreg:4", index=5, seed=1)
    other = apply_corruption(raw, "misreg:4", index=6, seed=1)
    np.testing.assert_array_equal(first["x"], again["x"])
    assert not np.array_equal(first["x"], other["x"])
    np.testing.assert_array_equal(first["rgb"], raw["rgb"])
    # the shifted X equals the original moved by some (dy, dx) with |(dy, dx)| ~ 4
    matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
               if np.array_equal(shift_with_zero_fill(raw["x"], dy, dx), first["x"])]
    assert len(matches) == 1 and 3 <= np.hypot(*matches[0]) <= 5


def test_noise_scales_with_full_scale_and_clips():
    raw = {"rgb": np.full((200, 200, 3), 128, np.uint8), "x": np.full((200, 200, 1), 128, np.uint8),
           "label": np.zeros((200, 200), np.int64)}
    noisy = apply_corruption(raw, "noise:0.02", index=0, seed=0)
    for key in ("rgb", "x"):
        assert noisy[key].dtype == np.float32
        assert abs(float(noisy[key].std()) - 0.02 * 255) < 0.2
    only_x = apply_corruption(raw, "noise_x:0.5", index=0, seed=0)
    assert only_x["rgb"] is raw["rgb"] and only_x["x"].min() == 0 and only_x["x"].max() == 255
    floats = {"x": np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10, 1)}
    assert apply_corruption(floats, "noise:0.1", 0, 0, full_scale={"x": 2.0})["x"].std() > 0.15


def test_dataset_applies_corruption_before_normalisation(tmp_path):
    make_mfnet(tmp_path, "sigma", full_size=None)
    dataset = build_dataset("mfnet", root=tmp_path, split="test", corruption="x_missing")
    mean, std = np.mean([123.675, 116.28, 103.53]), np.mean([58.395, 57.12, 57.375])
    torch.testing.assert_close(dataset[0]["x"], torch.full((1, 12, 16), float(-mean / std)))
    clean = build_dataset("mfnet", root=tmp_path, split="test")
    torch.testing.assert_close(dataset[0]["rgb"], clean[0]["rgb"])
    with pytest.raises(UnknownCorruptionError):
        build_dataset("mfnet", root=tmp_path, split="test", corruption="x-missing")


def test_augment_keys_are_validated():
    with pytest.raises(AugmentConfigError, match=r"unknown augment key\(s\) crop_size"):
        parse_augment({"crop_size": [4, 4]})
    with pytest.raises(AugmentConfigError, match="scale or augment.scale_choices"):
        parse_augment({"scale": [0.5, 2], "scale_choices": [1]})
    assert parse_augment({"flip": True}).flip == "h"


def test_keep_ratio_size_is_mmcv_rescale():
    assert keep_ratio_size(256, 256, (512, 512)) == (512, 512)
    assert keep_ratio_size(300, 600, (2048, 512)) == (512, 1024)


def test_geometry_is_shared_by_every_modality():
    height, width = 24, 32
    yy, xx = np.mgrid[0:height, 0:width]
    code = (yy * 100 + xx).astype(np.float32)
    raw = {"rgb": np.stack([code] * 3, axis=2), "x": code[..., None].copy(),
           "label": (yy * 100 + xx).astype(np.int64)}
    settings = parse_augment({"scale_choices": [1.0], "crop": [10, 12], "flip": "hv"})
    for seed in range(6):
        out = augment_sample(raw, settings, 255, np.random.default_rng(seed), ["rgb", "x"])
        assert out["label"].shape == (10, 12)
        np.testing.assert_array_equal(out["rgb"][..., 0], out["label"].astype(np.float32))
        np.testing.assert_array_equal(out["x"][..., 0], out["label"].astype(np.float32))


def test_crop_pads_label_with_ignore(tmp_path):
    make_mfnet(tmp_path, "sigma", full_size=None)  # 12x16 images
    dataset = build_dataset("mfnet", root=tmp_path, split="test", augment={"crop": [20, 16]})
    item = dataset[0]
    assert item["label"].shape == (20, 16) and (item["label"][12:] == 255).all()
    assert (item["rgb"][:, 12:] == 0).all()


def test_photometric_distortion_stays_in_range_and_is_seeded():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.float32)
    a = photometric_distortion(rgb, np.random.default_rng(3))
    b = photometric_distortion(rgb, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255
