"""RefCOCO / RefCOCO+ / G-Ref: one sample per expression, REFER masks, token ids."""
import numpy as np
import pytest
import torch

from bench.data import build_dataset
from bench.data.io import DataError
from bench.data.refcoco import decode_rle_counts, rasterise_segmentation
from tests.helpers.native_data import make_refcoco


def _encode_rle_string(counts):
    """COCO maskApi rleToString, to test the decoder against its encoder."""
    chars = []
    for index, value in enumerate(counts):
        if index > 2:
            value -= counts[index - 2]
        more = True
        while more:
            code = value & 0x1F
            value >>= 5
            more = (value != -1) if code & 0x10 else (value != 0)
            if more:
                code |= 0x20
            chars.append(chr(code + 48))
    return "".join(chars)


@pytest.mark.parametrize("name,folder,split_by", [("refcoco", "refcoco", "unc"),
                                                  ("refcoco+", "refcoco+", "unc"),
                                                  ("refcocog", "refcocog", "umd")])
def test_one_sample_per_expression_with_masks(tmp_path, name, folder, split_by):
    expected = make_refcoco(tmp_path, folder, split_by)
    train = build_dataset(name, root=tmp_path, split="train")
    assert [e.name for e in train.entries] == ["0_0", "0_1"]
    for index, entry in enumerate(train.entries):
        item = train[index]
        np.testing.assert_array_equal(item["label"].numpy(), expected[entry.name]["label"])
        assert item["text"].dtype == torch.int64 and item["text"].shape == (20,)
        assert item["rgb"].shape == (3, 20, 24) and "x" not in item
    # words tokenizer: train vocabulary sorted -> brown 2, dog 3, left 4, the 5; 0 pads
    assert train[0]["text"][:3].tolist() == [4, 3, 0]
    assert train[1]["text"][:4].tolist() == [5, 2, 3, 0]
    val = build_dataset(name, root=tmp_path, split="val")
    item = val[0]
    np.testing.assert_array_equal(item["label"].numpy(), expected["1_2"]["label"])
    assert item["text"][:3].tolist() == [1, 1, 4]  # "cat on" unknown, "left" known
    assert val.info.task == "referring" and val.info.protocol["resize"] == [480, 480]


def test_ref_sampling_draws_one_sentence_per_ref(tmp_path):
    make_refcoco(tmp_path)
    dataset = build_dataset("refcoco", root=tmp_path, split="train", sampling="ref")
    assert len(dataset) == 1
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        seen.add(tuple(dataset[0]["text"][:3].tolist()))
    assert seen == {(4, 3, 0), (5, 2, 3)}


def test_callable_tokenizer_and_fixed_resize(tmp_path):
    make_refcoco(tmp_path)
    dataset = build_dataset("refcoco", root=tmp_path, split="train", max_tokens=4,
                            tokenizer=lambda s: [len(w) for w in s.split()],
                            augment={"resize": [8, 8]})
    item = dataset[1]
    assert item["text"].tolist() == [3, 5, 3, 0]
    assert item["rgb"].shape == (3, 8, 8) and item["label"].shape == (8, 8)
    assert set(item["label"].unique().tolist()) <= {0, 1}


def test_rle_decoding_compressed_and_polygon_overlap():
    counts = [3, 7, 40, 2, 12]
    mask = decode_rle_counts(counts, 8, 8)
    np.testing.assert_array_equal(decode_rle_counts(_encode_rle_string(counts), 8, 8), mask)
    assert mask.sum() == 9 and mask.T.reshape(-1)[3:10].all()
    # REFER sums the polygons of one object; LAVT keeps only pixels equal to 1.
    overlap = rasterise_segmentation([[0, 0, 3, 0, 3, 3, 0, 3], [2, 2, 5, 2, 5, 5, 2, 5]], 6, 6)
    assert overlap[2, 2] == 2 and overlap[0, 0] == 1


def test_missing_refs_and_annotation_errors(tmp_path):
    make_refcoco(tmp_path)
    with pytest.raises(DataError, match=r"refs\(google\)\.p: refs file not found.*refs\(unc\)\.p"):
        build_dataset("refcoco", root=tmp_path, split="train", split_by="google")
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    dataset = build_dataset("refcoco", root=tmp_path, split="train")
    with pytest.raises(DataError, match=r"COCO_train2014_000000000001\.jpg: rgb file of sample"):
        dataset[0]
