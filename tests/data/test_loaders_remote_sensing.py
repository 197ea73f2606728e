"""WHU-OPT-SAR, Hunan, ISPRS Vaihingen/Potsdam and LoveDA decode their layouts value by value."""
import numpy as np
import pytest
import torch

from bench.data import build_dataset
from bench.data.hunan import remap_land_cover
from bench.data.io import DataError
from bench.data.whu_opt_sar import parse_division_file
from tests.helpers.native_data import (
    WHU_TILES,
    assert_raw_equal,
    make_hunan_mmseg,
    make_hunan_native,
    make_isprs_mmseg,
    make_loveda,
    make_whu_mmseg,
    make_whu_tiles,
)


def test_whu_tiles_are_cut_into_256_crops_and_labels_divided_by_ten(tmp_path):
    expected = make_whu_tiles(tmp_path)  # 520x600 tiles -> 2 x 2 crops, remainders dropped
    train = build_dataset("whu_opt_sar", root=tmp_path, split="train")
    assert train.layout == "tiles"
    names = [e.name for e in train.entries]
    assert names == [f"{t}_{k}" for t in WHU_TILES["train"] for k in range(4)]
    assert_raw_equal(train, expected)
    item = train[5]
    assert item["rgb"].shape == (4, 256, 256) and item["x"].shape == (1, 256, 256)
    assert train.info.num_classes == 7 and train.info.modalities == {"rgb": 4, "x": 1}
    test = build_dataset("whu_opt_sar", root=tmp_path, split="test")
    assert len(test) == 4


def test_whu_keep_background_gives_eight_classes(tmp_path):
    make_whu_tiles(tmp_path)
    dataset = build_dataset("whu_opt_sar", root=tmp_path, split="test", keep_background=True)
    sample = dataset.load_raw(dataset.entries[0])
    assert dataset.info.num_classes == 8 and dataset.info.classes[0] == "background"
    assert sample["label"].min() >= 0 and sample["label"].max() <= 7


def test_whu_division_file_syntax(tmp_path):
    path = tmp_path / "division.txt"
    path.write_text("train:\nA.tif\nB.tif, C.tif\n\ntest: D.tif;E.tif\n")
    assert parse_division_file(path) == {"train": ["A", "B", "C"], "test": ["D", "E"]}


def test_whu_mmseg_layout(tmp_path):
    expected = make_whu_mmseg(tmp_path)
    dataset = build_dataset("whu_opt_sar", root=tmp_path, split="train")
    assert dataset.layout == "mmseg"
    assert_raw_equal(dataset, expected)
    item = dataset[0]
    rgb = (expected[dataset.entries[0].name]["rgb"].astype(np.float32)
           - np.array([104.74, 96.77, 79.21, 100.92])) / np.array([171.04, 217.80, 305.58, 697.17])
    torch.testing.assert_close(item["rgb"], torch.from_numpy(rgb.transpose(2, 0, 1)).float())


def test_whu_label_not_multiple_of_ten_is_an_error(tmp_path):
    from bench.data.io import write_tiff
    make_whu_tiles(tmp_path)
    bad = np.full((520, 600), 20, np.uint8)
    bad[0, 0] = 25
    write_tiff(tmp_path / "lbl" / "NH49E002015.tif", bad)
    dataset = build_dataset("whu_opt_sar", root=tmp_path, split="test")
    with pytest.raises(DataError, match=r"NH49E002015\.tif: label values 25 are not multiples"):
        dataset.load_raw(dataset.entries[0])


def test_hunan_official_remap_table():
    codes = np.array([[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 255, 1]], dtype=np.uint8)
    expected = np.array([[255, 0, 1, 2, 1, 3, 4], [6, 6, 5, 6, 6, 255, 0]])
    np.testing.assert_array_equal(remap_land_cover(codes), expected)
    with pytest.raises(DataError, match="codes 12, 200 are not in the official table"):
        remap_land_cover(np.array([[12, 200]], dtype=np.uint8))


def test_hunan_native_layout_with_dem(tmp_path):
    expected = make_hunan_native(tmp_path)
    dataset = build_dataset("hunan", root=tmp_path, split="train")
    assert dataset.layout == "native" and dataset.info.modalities == {"rgb": 13, "x": 2}
    assert_raw_equal(dataset, expected)
    with_dem = build_dataset("hunan", root=tmp_path, split="val", with_dem=True)
    sample = with_dem.load_raw(with_dem.entries[0])
    truth = expected["3"]
    dem = (truth["dem"] - truth["dem"].min()) / (truth["dem"].max() - truth["dem"].min())
    np.testing.assert_allclose(sample["x"][..., 2], dem, rtol=1e-6)
    np.testing.assert_array_equal(sample["x"][..., :2], truth["x"])
    assert with_dem[0]["x"].shape == (3, 6, 7)


def test_hunan_mmseg_layout(tmp_path):
    expected = make_hunan_mmseg(tmp_path)
    for split in ("train", "val", "test"):
        assert_raw_equal(build_dataset("hunan", root=tmp_path, split=split), expected)


@pytest.mark.parametrize("name", ["vaihingen", "potsdam"])
def test_isprs_crops_with_dsm(tmp_path, name):
    expected = make_isprs_mmseg(tmp_path)
    train = build_dataset(name, root=tmp_path, split="train")
    assert_raw_equal(train, expected)
    item = train[0]
    truth = expected["area1_0_0_512_512"]
    assert item["rgb"].shape == (3, 512, 512)
    # MS2MNet: image / 255, DSM in [0, 1]; black (0) pixels are ignored.
    torch.testing.assert_close(item["rgb"], torch.from_numpy(
        truth["rgb"].transpose(2, 0, 1).astype(np.float32) / 255))
    torch.testing.assert_close(item["x"][0], torch.from_numpy(truth["x"][..., 0]))
    assert (item["label"] == 255).any() and item["label"][item["label"] != 255].max() == 5
    assert train.info.eval_classes == [0, 1, 2, 3, 4]
    rgb_only = build_dataset(name, root=tmp_path, split="val", with_dsm=False)
    assert set(rgb_only[0]) == {"rgb", "label", "name"}
    assert rgb_only.info.modalities == {"rgb": 3}


def test_isprs_missing_dsm_dir_says_what_to_do(tmp_path):
    make_isprs_mmseg(tmp_path, full_size=False)
    import shutil
    shutil.rmtree(tmp_path / "dsm_dir")
    with pytest.raises(DataError, match=r"dsm_dir/train: DSM folder not found.*with_dsm: false"):
        build_dataset("vaihingen", root=tmp_path, split="train")


@pytest.mark.parametrize("layout", ["native", "mmseg"])
def test_loveda_layouts(tmp_path, layout):
    expected = make_loveda(tmp_path, layout)
    train = build_dataset("loveda", root=tmp_path, split="train")
    assert train.layout == layout
    assert_raw_equal(train, expected)
    sample = train.load_raw(train.entries[0])
    assert (sample["label"] == 255).any()  # LoveDA 0 (no-data) -> ignore
    assert set(train[0]) == {"rgb", "label", "name"}
    with pytest.raises(DataError, match="test masks are not public"):
        build_dataset("loveda", root=tmp_path, split="test")
    with pytest.raises(Exception, match="x_missing.*needs modality 'x'"):
        build_dataset("loveda", root=tmp_path, split="val", corruption="x_missing")


def test_loveda_scene_selection(tmp_path):
    expected = make_loveda(tmp_path, "native")
    rural = build_dataset("loveda", root=tmp_path, split="val", scene="rural")
    assert [e.name for e in rural.entries] == [n for n, t in expected.items()
                                              if t["scene"] == "Rural" and t["split"] == "val"]
