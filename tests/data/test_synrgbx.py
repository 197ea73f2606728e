"""SynRGBX (docs/datasets.md): determinism, class layout and the XOR rule, the no-leak property,
robustness sets, train-time robustness, and the exported Sigma/CMX layout."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.data import build_dataset
from bench.data.checks import require_ok
from bench.data.io import DataError
from bench.data.rgbx_folder import SIGMA_NORM
from bench.data.synrgbx import export_synrgbx, render_split
from bench.data.synrgbx_render import (
    CLASSES,
    FAMILIES,
    FLAVOURS,
    class_of,
    render_label,
    render_rgb,
    render_scene,
    render_x,
    sample_scene,
    scene_streams,
    top_item,
)

COUNTS = [6, 3, 5]


def _scene(index, seed=0, split="train", size=64, **replace_streams):
    streams = scene_streams(seed, split, index)
    streams.update(replace_streams)
    scene = sample_scene(size, streams)
    return scene, top_item(scene)


def test_class_table_and_xor_rule():
    fam = {name: i for i, name in enumerate(FAMILIES)}
    expected = {("red", 0): 1, ("red", 1): 2, ("green", 0): 3, ("green", 1): 4, ("blue", 0): 5,
                ("blue", 1): 6, ("yellow", 0): 7, ("cyan", 1): 7, ("yellow", 1): 8,
                ("cyan", 0): 8}
    assert {k: class_of(fam[k[0]], k[1]) for k in expected} == expected
    assert len(CLASSES) == 9 and CLASSES[0] == "background"
    # neither attribute alone decides the XOR pair: each value of A and of P reaches 7 and 8
    for family in ("yellow", "cyan"):
        assert {class_of(fam[family], p) for p in (0, 1)} == {7, 8}
    for level in (0, 1):
        assert {class_of(fam[f], level) for f in ("yellow", "cyan")} == {7, 8}


def test_labels_follow_the_latents():
    for index in range(5):
        scene, top = _scene(index)
        label = render_label(scene, top)
        for k, item in enumerate(scene.items):
            visible = label[top == k]
            if item.kind == "object":
                assert (visible == class_of(scene.family[k], scene.level[k])).all()
            else:  # decals and bumps are background
                assert (visible == 0).all()
        assert (label[top == -1] == 0).all()
        # flipping P of every object swaps 1<->2, ..., 7<->8; flipping yellow<->cyan swaps 7<->8
        flipped = dataclasses.replace(scene, level=np.where(scene.level >= 0, 1 - scene.level, -1))
        swap_level = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7])
        np.testing.assert_array_equal(render_label(flipped, top), swap_level[label])
        other = np.array([0, 1, 2, 4, 3])  # yellow (3) <-> cyan (4)
        recoloured = dataclasses.replace(
            scene, family=np.where(scene.family >= 0, other[np.maximum(scene.family, 0)], -1))
        xor_swap = np.array([0, 1, 2, 3, 4, 5, 6, 8, 7])
        np.testing.assert_array_equal(render_label(recoloured, top), xor_swap[label])


def test_boundary_option_marks_region_edges_ignore():
    scene, top = _scene(0)
    plain, edged = render_label(scene, top), render_label(scene, top, boundary=True)
    changed = plain != edged
    assert changed.any() and (edged[changed] == 255).all()
    assert not (edged[1:-1, 1:-1][(top[1:-1, 1:-1] == top[:-2, 1:-1]) &
                                  (top[1:-1, 1:-1] == top[2:, 1:-1]) &
                                  (top[1:-1, 1:-1] == top[1:-1, :-2]) &
                                  (top[1:-1, 1:-1] == top[1:-1, 2:])] == 255).any()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_no_leak_between_modalities(flavour):
    """Re-drawing P leaves RGB byte-identical; re-drawing A leaves X byte-identical."""
    for index in range(3):
        base_scene, top = _scene(index)
        new = np.random.SeedSequence([999, index])
        level_scene, level_top = _scene(index, level=new)
        hue_scene, hue_top = _scene(index, hue=new)
        assert (level_top == top).all() and (hue_top == top).all()  # geometry is shared
        assert not np.array_equal(level_scene.level, base_scene.level)
        assert not np.array_equal(hue_scene.family, base_scene.family)
        rgb, x = render_rgb(base_scene, top), render_x(base_scene, top, flavour)
        assert render_rgb(level_scene, top).tobytes() == rgb.tobytes()
        assert render_x(hue_scene, top, flavour).tobytes() == x.tobytes()
        # ...and each modality does see its own attribute
        assert not np.array_equal(render_x(level_scene, top, flavour), x)
        assert not np.array_equal(render_rgb(hue_scene, top), rgb)


def test_deterministic_by_seed_and_splits_differ():
    a = render_scene(3, "train", 7, 64, "thermal")
    b = render_scene(3, "train", 7, 64, "thermal")
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    for other in (render_scene(4, "train", 7, 64, "thermal"),
                  render_scene(3, "test", 7, 64, "thermal")):
        assert not np.array_equal(a[0], other[0])
    first = build_dataset("synrgbx", split="test", counts=COUNTS, seed=5)
    render_split.__globals__["_CACHE"].clear()  # render again, not from the cache
    second = build_dataset("synrgbx", split="test", counts=COUNTS, seed=5)
    for i in range(len(first)):
        for key in ("rgb", "x", "label"):
            assert torch.equal(first[i][key], second[i][key])
    item = first[0]
    assert item["rgb"].shape == (3, 64, 64) and item["rgb"].dtype == torch.float32
    assert item["x"].shape == (1, 64, 64) and item["label"].dtype == torch.int64
    assert item["name"] == "test_00000" and len(first) == COUNTS[2]


def test_pixel_fractions_match_the_spec():
    labels = render_split("val", 120, seed=1)["label"]
    fractions = np.bincount(labels.ravel(), minlength=9) / labels.size
    assert 0.6 < fractions[0] < 0.75                      # spec: 0.667
    assert all(0.015 < f < 0.05 for f in fractions[1:7])  # spec: ~0.033 each
    assert all(0.04 < f < 0.09 for f in fractions[7:9])   # spec: ~0.066 each


def test_x_encodes_local_contrast_by_level():
    """DSM without the ground field: high objects stand out more than low ones."""
    high, low = [], []
    for index in range(10):
        scene, top = _scene(index)
        x = render_x(scene, top, "dsm", ndsm=True).astype(float)
        ground = x[top == -1].mean()
        for k, item in enumerate(scene.items):
            if item.kind == "object" and (top == k).sum() > 20:
                (high if scene.level[k] else low).append(x[top == k].mean() - ground)
    assert min(high) > max(low) > 0


def test_corruption_sets():
    kwargs = dict(split="test", counts=COUNTS, flavour="depth")
    clean = build_dataset("synrgbx", **kwargs)
    sets = {name: build_dataset("synrgbx", corruption=name, **kwargs)
            for name in ("x_missing", "rgb_missing", "night", "misreg_affine:4",
                         "misreg_affine:0")}
    for i in range(len(clean)):
        ref = clean[i]
        (mean,), (std,) = SIGMA_NORM["x"]  # a dead sensor reads 0 before normalisation
        assert torch.allclose(sets["x_missing"][i]["x"], torch.full_like(ref["x"], -mean / std))
        assert torch.equal(sets["x_missing"][i]["rgb"], ref["rgb"])
        assert sets["rgb_missing"][i]["rgb"].unique(dim=None).numel() == 3  # one value/channel
        assert torch.equal(sets["rgb_missing"][i]["x"], ref["x"])
        for name in ("night", "misreg_affine:4", "misreg_affine:0"):
            assert torch.equal(sets[name][i]["label"], ref["label"])
        assert torch.equal(sets["night"][i]["x"], ref["x"])
        assert torch.equal(sets["misreg_affine:4"][i]["rgb"], ref["rgb"])
        assert not torch.equal(sets["misreg_affine:4"][i]["x"], ref["x"])
        assert torch.equal(sets["misreg_affine:0"][i]["x"], ref["x"])
    # night darkens part of the image, deterministically per (seed, index)
    raw = clean.raw(0)["rgb"].astype(float)
    night = build_dataset("synrgbx", corruption="night", **kwargs)
    again = build_dataset("synrgbx", corruption="night", **kwargs)
    darkened = [(torch.equal(night[i]["rgb"], again[i]["rgb"]),
                 float((night[i]["rgb"] < clean[i]["rgb"] - 0.5).float().mean()))
                for i in range(len(clean))]
    assert all(same for same, _ in darkened)
    assert any(0.0 < fraction for _, fraction in darkened) and raw.mean() > 40


def test_train_time_robustness_only_on_the_train_split():
    train = build_dataset("synrgbx", split="train", counts=COUNTS, modality_dropout=1.0,
                          train_misreg=0)
    torch.manual_seed(0)
    items = [train[i] for i in range(len(train))]
    dropped = [bool((it["x"] == it["x"].flatten()[0]).all()) or
               bool((it["rgb"][0] == it["rgb"][0].flatten()[0]).all()) for it in items]
    assert all(dropped)
    torch.manual_seed(0)
    assert all(torch.equal(a["x"], train[i]["x"]) for i, a in enumerate(items))  # seeded
    test = build_dataset("synrgbx", split="test", counts=COUNTS, modality_dropout=1.0)
    assert torch.equal(test[0]["x"], build_dataset("synrgbx", split="test", counts=COUNTS,
                                                   modality_dropout=0.0)[0]["x"])


def test_bad_options_are_clear_errors():
    with pytest.raises(DataError, match="flavour 'lidar' is unknown"):
        build_dataset("synrgbx", flavour="lidar")
    with pytest.raises(DataError, match=r"counts: give \[train, val, test\]"):
        build_dataset("synrgbx", counts=[1, 2])
    with pytest.raises(DataError, match="no split 'dev'"):
        build_dataset("synrgbx", split="dev", counts=COUNTS)
    with pytest.raises(DataError, match="synrgbx_folder"):
        build_dataset("synrgbx", root="/data")


def test_export_layout_reads_back_identically(tmp_path):
    root = export_synrgbx(tmp_path / "SynRGBX", flavour="thermal", counts=COUNTS, seed=2)
    for folder in ("RGB", "Modal", "Label"):
        assert len(list((root / folder).glob("*.png"))) == sum(COUNTS)
    assert (root / "test.txt").read_text().split() == [f"test_{i:05d}" for i in range(5)]
    report = require_ok("synrgbx_folder", root, ["train", "test"])  # the runner's data check
    assert report.ok
    meta = json.loads((root / "meta.json").read_text())
    assert meta["flavour"] == "thermal" and meta["classes"] == CLASSES
    assert meta["counts"] == {"train": 6, "val": 3, "test": 5} and meta["xor_pair"] == [7, 8]
    for corruption in (None, "misreg_affine:4"):
        memory = build_dataset("synrgbx", split="test", flavour="thermal", counts=COUNTS, seed=2,
                               corruption=corruption)
        disk = build_dataset("synrgbx_folder", root=root, split="test", corruption=corruption)
        assert disk.info.x_kind == "thermal" and disk.info.num_classes == 9
        for i in range(len(memory)):
            a, b = memory[i], disk[i]
            assert a["name"] == b["name"]
            for key in ("rgb", "x", "label"):
                assert torch.equal(a[key], b[key]), (key, i)
