"""MFNet, PST900, NYU Depth V2 and SUN RGB-D decode their native layouts value by value."""
import numpy as np
import pytest
import torch

from bench.data import build_dataset
from bench.data.io import DataError
from bench.data.pst900 import fill_holes
from tests.helpers.native_data import (
    MFNET_SPLITS,
    PST_SPLITS,
    assert_raw_equal,
    make_indoor,
    make_mfnet,
    make_pst900,
)

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def assert_item_normalised(item, truth, rgb_stats, x_stats):
    rgb = (truth["rgb"].astype(np.float32) - rgb_stats[0]) / rgb_stats[1]
    torch.testing.assert_close(item["rgb"], torch.from_numpy(rgb.transpose(2, 0, 1)))
    x = (truth["x"].astype(np.float32) - x_stats[0]) / x_stats[1]
    torch.testing.assert_close(item["x"], torch.from_numpy(x.transpose(2, 0, 1)))
    assert item["rgb"].dtype == torch.float32 and item["label"].dtype == torch.int64
    torch.testing.assert_close(item["label"], torch.from_numpy(truth["label"]))


@pytest.mark.parametrize("layout", ["native", "sigma"])
def test_mfnet_layouts(tmp_path, layout):
    expected = make_mfnet(tmp_path, layout)
    train = build_dataset("mfnet", root=tmp_path, split="train")
    assert train.layout == layout
    # Sigma's train2.txt is train + val; natively "train+val" concatenates the two files.
    if layout == "native":
        assert [e.name for e in train.entries] == MFNET_SPLITS["train"]
        train = build_dataset("mfnet", root=tmp_path, split="train+val")
    assert [e.name for e in train.entries] == MFNET_SPLITS["train"] + MFNET_SPLITS["val"]
    assert_raw_equal(train, expected)
    item = train[0]
    assert item["rgb"].shape == (3, 480, 640) and item["x"].shape == (1, 480, 640)
    assert item["name"] == "00001D"
    x_stats = (IMAGENET_MEAN.mean(), IMAGENET_STD.mean())
    assert_item_normalised(item, expected["00001D"], (IMAGENET_MEAN, IMAGENET_STD), x_stats)
    assert train.info.modalities == {"rgb": 3, "x": 1} and train.info.num_classes == 9


def test_mfnet_sigma_quirks_bgr_and_replicated_x(tmp_path):
    expected = make_mfnet(tmp_path, "native")
    dataset = build_dataset("mfnet", root=tmp_path, split="test", rgb_order="bgr", x_replicate=3)
    truth = expected["01234N"]
    item = dataset[0]
    bgr = (truth["rgb"][..., ::-1].astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(item["rgb"], torch.from_numpy(bgr.transpose(2, 0, 1).copy()))
    x3 = (np.repeat(truth["x"], 3, axis=2).astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(item["x"], torch.from_numpy(x3.transpose(2, 0, 1).copy()))
    assert dataset.info.modalities["x"] == 3


def test_mfnet_missing_split_names_available_files(tmp_path):
    make_mfnet(tmp_path, "sigma")
    with pytest.raises(DataError, match=r"val\.txt.*split file not found.*test\.txt, train2\.txt"):
        build_dataset("mfnet", root=tmp_path, split="val")


@pytest.mark.parametrize("layout", ["native", "sigma"])
def test_pst900_layouts_and_thermal_holes(tmp_path, layout):
    expected = make_pst900(tmp_path, layout)
    train = build_dataset("pst900", root=tmp_path, split="train")
    assert train.layout == layout
    assert [e.name for e in train.entries] == sorted(PST_SPLITS["train"])
    assert_raw_equal(train, expected)
    item = train[0]
    assert item["rgb"].shape == (3, 720, 1280)
    test = build_dataset("pst900", root=tmp_path, split="test")
    assert_raw_equal(test, expected)


def test_pst900_fill_holes(tmp_path):
    expected = make_pst900(tmp_path, "native", full_size=False)
    filled = build_dataset("pst900", root=tmp_path, split="test", thermal_holes="fill")
    sample = filled.load_raw(filled.entries[0])
    truth = expected[filled.entries[0].name]["x"]
    assert (truth == 0).any() and not (sample["x"] == 0).any()
    valid = truth != 0
    np.testing.assert_array_equal(sample["x"][valid], truth[valid])


def test_fill_holes_mean_of_neighbours():
    image = np.array([[10, 10, 10], [10, 0, 20], [20, 20, 20]], dtype=np.uint8)
    # the hole's eight neighbours: 10, 10, 10, 10, 20, 20, 20, 20 -> 15
    np.testing.assert_array_equal(fill_holes(image)[1, 1], 15)


@pytest.mark.parametrize("dataset,layout", [("nyudv2", "dformer"), ("nyudv2", "sigma"),
                                            ("sunrgbd", "dformer"), ("sunrgbd", "sigma")])
def test_indoor_rgbd_layouts_void_wraps_to_255(tmp_path, dataset, layout):
    expected = make_indoor(tmp_path, dataset, layout)
    train = build_dataset(dataset, root=tmp_path, split="train")
    assert train.layout == layout
    assert [e.name for e in train.entries] == ["1", "2"]
    assert_raw_equal(train, expected)
    sample = train.load_raw(train.entries[1])
    assert (sample["label"] == 255).any()  # void 0 -> 255
    assert sample["label"][sample["label"] != 255].max() == train.info.num_classes - 1
    test = build_dataset(dataset, root=tmp_path, split="test")
    assert_raw_equal(test, expected)
    assert train.info.num_classes == (40 if dataset == "nyudv2" else 37)
    assert train.info.protocol["scales"] == [0.75, 1.0, 1.25] and train.info.protocol["flip"]


def test_train_augmentation_keeps_modalities_aligned(tmp_path):
    make_mfnet(tmp_path, "sigma")
    augment = {"scale_choices": [0.5, 0.75, 1, 1.25, 1.5, 1.75], "crop": [480, 640],
               "flip": True}
    plain = build_dataset("mfnet", root=tmp_path, split="train")
    augmented = build_dataset("mfnet", root=tmp_path, split="train", augment=augment)
    raw = plain.load_raw(plain.entries[0])
    for seed in range(4):
        torch.manual_seed(seed)
        item = augmented[0]
        assert item["rgb"].shape == (3, 480, 640) and item["label"].shape == (480, 640)
        # The label and the (unnormalised) thermal channel moved together: every labelled pixel
        # carries a label value that exists in the raw label.
        labelled = item["label"] != 255
        assert labelled.any()
        assert set(item["label"][labelled].unique().tolist()) <= set(np.unique(raw["label"]))
    torch.manual_seed(0)
    first = augmented[0]
    torch.manual_seed(0)
    again = augmented[0]
    torch.testing.assert_close(first["rgb"], again["rgb"])
