"""Broken data: each kind gives a clear message naming the file, and training does not start."""
import shutil

import numpy as np
import pytest

from bench.cli import main as data_cli
from bench.data import build_dataset
from bench.data.checks import DataCheckError, check_dataset, require_ok
from bench.data.io import DataError, write_png, write_tiff
from tests.helpers.native_data import make_hunan_native, make_mfnet, make_refcoco, make_whu_tiles


def mfnet_sigma(root):
    make_mfnet(root, "sigma", full_size=None)
    return root


def missing_modality(root):
    (mfnet_sigma(root) / "Modal" / "00002N.png").unlink()
    return "mfnet", "missing file", root / "Modal" / "00002N.png", "x file of sample '00002N'"


def size_mismatch(root):
    write_png(mfnet_sigma(root) / "Modal" / "00003D.png", np.zeros((12, 15), np.uint8))
    return "mfnet", "size mismatch", root / "Label" / "00003D.png", "x 12x15"


def label_out_of_range(root):
    label = np.zeros((12, 16), np.uint8)
    label[0, :3] = 9
    write_png(mfnet_sigma(root) / "Label" / "00001D.png", label)
    return "mfnet", "label out of range", root / "Label" / "00001D.png", r"9 \(3 px\)"


def truncated_png(root):
    path = mfnet_sigma(root) / "RGB" / "01234N.png"
    path.write_bytes(path.read_bytes()[:120])
    return "mfnet", "corrupt file", path, "truncated or not an image"


def empty_split(root):
    (mfnet_sigma(root) / "test.txt").write_text("\n")
    return "mfnet", "empty split", root / "test.txt", "'test' .*has no samples"


def wrong_channel_count(root):
    make_mfnet(root, "native", full_size=None)
    write_png(root / "images" / "00003D.png", np.zeros((12, 16, 3), np.uint8))
    return "mfnet", "wrong channel count", root / "images" / "00003D.png", "expected an RGBA PNG"


def colour_label(root):
    write_png(mfnet_sigma(root) / "Label" / "00003D.png", np.zeros((12, 16, 3), np.uint8))
    return "mfnet", "wrong channel count", root / "Label" / "00003D.png", "colour visualisation"


def missing_split_file(root):
    (mfnet_sigma(root) / "test.txt").unlink()
    (root / "test_night.txt").write_text("01234N\n")
    return "mfnet", "missing split file", None, None


def duplicate_sample(root):
    (mfnet_sigma(root) / "test.txt").write_text("01234N\n01234N\n")
    return "mfnet", "duplicate sample", root / "test.txt", "listed more than once"


def missing_root(root):
    return "mfnet", "missing root", root / "nowhere", "root folder not found"


def unknown_layout(root):
    (root / "stuff").mkdir()
    return "mfnet", "unknown layout", root, "cannot recognise the mfnet layout"


def whu_label_not_times_ten(root):
    make_whu_tiles(root)
    label = np.full((520, 600), 30, np.uint8)
    label[300, 300] = 33
    write_tiff(root / "lbl" / "NH49E002015.tif", label)
    return "whu_opt_sar", "bad label encoding", root / "lbl" / "NH49E002015.tif", "33 are not"


def hunan_unknown_code(root):
    make_hunan_native(root)
    write_tiff(root / "val" / "lc" / "lc_3.tif", np.full((6, 7), 42, np.uint8))
    return "hunan", "bad label encoding", root / "val" / "lc" / "lc_3.tif", "codes 42"


def refcoco_missing_annotation(root):
    make_refcoco(root)
    text = (root / "refcoco" / "instances.json").read_text().replace('"id": 102', '"id": 999')
    (root / "refcoco" / "instances.json").write_text(text)
    return "refcoco", "bad annotation", root / "refcoco" / "instances.json", "annotation 102"


def thermal_16bit(root):
    """A raw 16-bit (``I;16``) thermal frame where MFNet's 8-bit thermal is expected."""
    path = mfnet_sigma(root) / "Modal" / "00002N.png"
    write_png(path, np.full((12, 16), 4000, np.uint16))
    return "mfnet", "wrong bit depth", path, "16-bit .*rescale_16bit"


def latin1_split_file(root):
    path = mfnet_sigma(root) / "test.txt"
    path.write_bytes("01234N\nM\u00fcnchen\n".encode("latin-1"))
    return "mfnet", "bad encoding", path, "not UTF-8 .*line 2.*iconv"


CASES = [thermal_16bit, latin1_split_file, missing_modality, size_mismatch, label_out_of_range,
         truncated_png, empty_split,
         wrong_channel_count, colour_label, missing_split_file, duplicate_sample, missing_root,
         unknown_layout, whu_label_not_times_ten, hunan_unknown_code, refcoco_missing_annotation]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_broken_data_is_reported_by_file_and_blocks_training(tmp_path, case, capsys):
    name, kind, path, message = case(tmp_path)
    root = tmp_path / "nowhere" if kind == "missing root" else tmp_path
    splits = ["test"] if case is missing_split_file else None
    report = check_dataset(name, root, splits)
    assert not report.ok
    problems = [p for p in report.all_problems if p.kind == kind]
    assert problems, report.format()
    if path is not None:
        assert any(p.path == path for p in problems), report.format()
    text = report.format()
    if message is not None:
        assert any(__import__("re").search(message, p.message) for p in problems), text
    assert "FAILED" in text
    # The runner's gate raises before training, with the same report.
    with pytest.raises(DataCheckError) as raised:
        require_ok(name, root, splits)
    assert str(path or kind) in str(raised.value) or kind in str(raised.value)
    # The CLI exits 2 with the report on stderr and no traceback.
    argv = ["data", "check", name, str(root)] + [a for s in splits or [] for a in ("--split", s)]
    assert data_cli(argv) == 2
    err = capsys.readouterr().err
    assert kind in err and "Traceback" not in err


def test_missing_split_file_lists_the_split_files_present(tmp_path):
    missing_split_file(tmp_path)
    report = check_dataset("mfnet", tmp_path, ["test"])
    assert "split files here: test_night.txt, train2.txt" in report.format()


def test_clean_data_passes_with_histogram(tmp_path, capsys):
    mfnet_sigma(tmp_path)
    report = require_ok("mfnet", tmp_path)
    assert report.ok and [s.split for s in report.splits] == ["test", "train"]
    train = report.splits[1]
    assert train.entries == 3 and train.histogram.sum() == 3 * 12 * 16
    assert data_cli(["data", "check", "mfnet", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "class histogram: unlabeled" in out and out.rstrip().endswith("OK")


def test_every_problem_is_collected_not_just_the_first(tmp_path):
    mfnet_sigma(tmp_path)
    (tmp_path / "Modal" / "00002N.png").unlink()
    (tmp_path / "RGB" / "00003D.png").unlink()
    write_png(tmp_path / "Label" / "00001D.png", np.full((12, 16), 77, np.uint8))
    report = check_dataset("mfnet", tmp_path, ["train"])
    assert sorted(p.kind for p in report.all_problems) == [
        "label out of range", "missing file", "missing file"]


def test_loader_raises_the_same_errors_at_load_time(tmp_path):
    missing_modality(tmp_path)
    dataset = build_dataset("mfnet", root=tmp_path, split="train")
    with pytest.raises(DataError, match=r"Modal/00002N\.png: x file of sample"):
        dataset[1]


def test_cli_bad_usage_exits_2(tmp_path, capsys):
    assert data_cli(["data", "check", "mfnett", str(tmp_path)]) == 2
    assert "did you mean 'mfnet'" in capsys.readouterr().err
    assert data_cli(["data", "convert", "nyudv2", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "no converter for 'nyudv2'" in capsys.readouterr().err
    mfnet_sigma(tmp_path)
    shutil.rmtree(tmp_path / "Label")
    assert data_cli(["data", "check", "mfnet", str(tmp_path), "--option", "bad"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_16bit_thermal_is_rescaled_on_request(tmp_path):
    """The loader refuses the 16-bit frame too; ``rescale_16bit: true`` reads it as OpenCV does
    (value >> 8: 4000 -> 15)."""
    thermal_16bit(tmp_path)
    for rescale in (False, True):
        datasets = [build_dataset("mfnet", root=tmp_path, split=split, rescale_16bit=rescale)
                    for split in ("train", "test")]
        dataset, entry = next((d, e) for d in datasets for e in d.entries if e.name == "00002N")
        if rescale:
            assert (dataset.load_raw(entry)["x"] == 15).all()
        else:
            with pytest.raises(DataError, match="16-bit"):
                dataset.load_raw(entry)
