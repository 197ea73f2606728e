"""Converters: raw downloads -> the papers' layouts, read back by the loaders value by value."""
import zipfile

import numpy as np
import pytest

from bench.cli import main as data_cli
from bench.data import build_dataset
from bench.data.convert_isprs import (
    ISPRS_COLOURS_RGB,
    colour_label_to_index,
    convert_potsdam,
    mmseg_crop_boxes,
)
from bench.data.io import read_image, write_jpeg, write_png, write_tiff
from tests.helpers.native_data import (
    assert_raw_equal,
    make_loveda,
    make_mfnet,
    make_pst900,
    make_whu_tiles,
)


def test_mfnet_native_to_sigma(tmp_path):
    expected = make_mfnet(tmp_path / "raw", "native", full_size=None)
    assert data_cli(["data", "convert", "mfnet", str(tmp_path / "raw"), str(tmp_path / "out")]) == 0
    train = build_dataset("mfnet", root=tmp_path / "out", split="train")
    assert train.layout == "sigma" and [e.name for e in train.entries] == [
        "00001D", "00002N", "00003D"]
    assert_raw_equal(train, expected)
    assert_raw_equal(build_dataset("mfnet", root=tmp_path / "out", split="test_night"), expected)


def test_pst900_native_to_sigma(tmp_path):
    expected = make_pst900(tmp_path / "raw" / "PST900_RGBT_Dataset", "native", full_size=False)
    args = ["data", "convert", "pst900", str(tmp_path / "raw"), str(tmp_path / "out")]
    assert data_cli(args) == 0
    for split in ("train", "test"):
        dataset = build_dataset("pst900", root=tmp_path / "out", split=split)
        assert dataset.layout == "sigma"
        assert_raw_equal(dataset, expected)


def test_loveda_zips_to_mmseg(tmp_path):
    expected = make_loveda(tmp_path / "extracted", "native")
    raw = tmp_path / "raw"
    raw.mkdir()
    for folder in ("Train", "Val", "Test"):  # LoveDA ships Train.zip, Val.zip, Test.zip
        with zipfile.ZipFile(raw / f"{folder}.zip", "w") as archive:
            for path in (tmp_path / "extracted" / folder).rglob("*.png"):
                archive.write(path, path.relative_to(tmp_path / "extracted"))
    assert data_cli(["data", "convert", "loveda", str(raw), str(tmp_path / "out")]) == 0
    val = build_dataset("loveda", root=tmp_path / "out", split="val")
    assert val.layout == "mmseg" and len(val) == 2
    assert_raw_equal(val, expected)
    assert len(list((tmp_path / "out" / "img_dir" / "test").glob("*.png"))) == 2


@pytest.mark.parametrize("layout", ["mmseg", "solc"])
def test_whu_tiles_to_crops(tmp_path, layout):
    expected = make_whu_tiles(tmp_path / "raw")
    argv = ["data", "convert", "whu_opt_sar", str(tmp_path / "raw"), str(tmp_path / "out"),
            "--option", f"layout={layout}", "--option", "split=official"]
    assert data_cli(argv) == 0
    train = build_dataset("whu_opt_sar", root=tmp_path / "out", split="train")
    assert train.layout == layout and len(train) == 8
    assert_raw_equal(train, expected)


def test_whu_random_split_is_six_two_two_and_seeded(tmp_path):
    make_whu_tiles(tmp_path / "raw")  # 3 tiles x 4 crops = 12 crops -> 7 / 2 / 3
    for out in ("a", "b"):
        assert data_cli(["data", "convert", "whu_opt_sar", str(tmp_path / "raw"),
                         str(tmp_path / out)]) == 0
    counts = {s: len(list((tmp_path / "a" / "cat" / s).glob("*.tif")))
              for s in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 2, "test": 3}
    assert sorted(p.name for p in (tmp_path / "a" / "cat" / "val").glob("*")) == \
        sorted(p.name for p in (tmp_path / "b" / "cat" / "val").glob("*"))


def test_isprs_colour_hash_matches_mmseg():
    colours = np.array([ISPRS_COLOURS_RGB + [(10, 20, 30)]], dtype=np.uint8)
    codes, unknown = colour_label_to_index(colours)
    assert codes.tolist() == [[0, 1, 2, 3, 4, 5, 6, 0]] and unknown == 1


def test_mmseg_crop_grid_quirk():
    # 700 wide, clip 512, stride 256: ceil(188 / 256) = 1 step, 256 + 512 >= 700 -> 1 + 1 boxes
    # origins 0 and 512 -> 512 moved back to 700 - 512 = 188.
    boxes = mmseg_crop_boxes(600, 700, 512, 256)
    assert sorted(set(boxes)) == [(0, 0, 512, 512), (0, 88, 512, 600), (188, 0, 700, 512),
                                  (188, 88, 700, 600)]
    assert mmseg_crop_boxes(600, 700, 0, 256) == [(0, 0, 700, 600)]


def _potsdam_raw(root, tile="2_10", ndsm_width=699):
    rng = np.random.default_rng(0)
    i, j = tile.split("_")
    image = rng.integers(0, 256, (600, 700, 4), dtype=np.uint8)
    codes = rng.integers(0, 7, (600, 700))
    codes[:5] = 0  # eroded boundary: black
    colour = np.array(ISPRS_COLOURS_RGB, dtype=np.uint8)[codes]
    ndsm = rng.integers(10, 200, (600, ndsm_width), dtype=np.uint8)
    write_tiff(root / "4_Ortho_RGBIR" / f"top_potsdam_{tile}_RGBIR.tif", image)
    write_tiff(root / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif",
               colour)
    jpg = write_jpeg(root / "1_DSM_normalisation" /
                     f"dsm_potsdam_{int(i):02d}_{int(j):02d}_normalized_lastools.jpg", ndsm)
    return image, codes, read_image(jpg)


def test_potsdam_tiles_to_crops_with_matching_dsm(tmp_path):
    image, codes, ndsm = _potsdam_raw(tmp_path / "raw")
    summary = convert_potsdam(tmp_path / "raw", tmp_path / "out", bands="RGBIR")
    assert summary.written == {"train": 4}
    dataset = build_dataset("potsdam", root=tmp_path / "out", split="train")
    names = [e.name for e in dataset.entries]
    assert names == ["2_10_0_0_512_512", "2_10_0_88_512_600", "2_10_188_0_700_512",
                     "2_10_188_88_700_600"]
    sample = dataset.load_raw(dataset.entries[3])
    np.testing.assert_array_equal(sample["rgb"], image[88:600, 188:700, :3])
    label = codes[88:600, 188:700] - 1
    label[codes[88:600, 188:700] == 0] = 255
    np.testing.assert_array_equal(sample["label"], label)
    # nDSM padded by its edge column to the tile width, min-max scaled over the tile.
    padded = np.pad(ndsm, ((0, 0), (0, 1)), mode="edge").astype(np.float64)
    unit = np.rint((padded - padded.min()) / (padded.max() - padded.min()) * 65535) / 65535
    np.testing.assert_allclose(sample["x"][..., 0], unit[88:600, 188:700], atol=1e-6)


def test_potsdam_ms2mnet_split_and_whole_tiles(tmp_path):
    _potsdam_raw(tmp_path / "raw", tile="4_10", ndsm_width=700)
    summary = convert_potsdam(tmp_path / "raw", tmp_path / "out", bands="RGBIR",
                              split="ms2mnet", clip_size=0)
    assert summary.written == {"test": 1}
    test = build_dataset("potsdam", root=tmp_path / "out", split="test")
    assert [e.name for e in test.entries] == ["4_10_0_0_700_600"]


def test_vaihingen_raw_layout(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    codes = rng.integers(0, 7, (520, 530))
    write_tiff(raw / "top" / "top_mosaic_09cm_area5.tif",
               rng.integers(0, 256, (520, 530, 3), dtype=np.uint8))
    write_tiff(raw / "gts_eroded_for_participants" / "top_mosaic_09cm_area5_noBoundary.tif",
               np.array(ISPRS_COLOURS_RGB, dtype=np.uint8)[codes])
    write_tiff(raw / "dsm" / "dsm_09cm_matching_area5.tif",
               rng.uniform(250, 290, (520, 530)).astype(np.float32))
    write_png(raw / "unrelated.png", np.zeros((2, 2), np.uint8))
    assert data_cli(["data", "convert", "vaihingen", str(raw), str(tmp_path / "out"),
                     "--option", "split=ms2mnet"]) == 0
    test = build_dataset("vaihingen", root=tmp_path / "out", split="test")
    assert [e.name for e in test.entries] == ["area5_0_0_512_512", "area5_0_8_512_520",
                                              "area5_18_0_530_512", "area5_18_8_530_520"]
    assert test[0]["x"].min() >= 0 and test[0]["x"].max() <= 1
