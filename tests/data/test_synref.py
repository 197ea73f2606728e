"""SynRef: determinism, and that every expression picks out exactly its target, judged from the
rendered pixels by an independent reader (connected components, colour, fill ratio, extent)."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from bench.data import build_dataset, get_dataset_class
from bench.data.io import DataError
from bench.data.synref import COLOURS, VOCAB, SynRefDataset
from bench.data.transforms import IMAGENET_MEAN_255, IMAGENET_STD_255


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask (breadth-first search)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp = np.zeros_like(mask, dtype=bool)
        queue = deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] \
                        and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(comp)
    return out


def perceive(rgb: np.ndarray) -> list[dict]:
    """Objects as a reader of the image sees them: saturated blobs, their colour (nearest
    centre), shape (bounding-box fill: square 1, circle pi/4, triangle 1/2), size (extent) and
    centre (bounding-box middle)."""
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    names, centres = list(COLOURS), np.asarray(list(COLOURS.values()), dtype=np.float64)
    objects = []
    for comp in components(saturated):
        ys, xs = np.nonzero(comp)
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        fill = comp.sum() / (height * width)
        mean = rgb[comp].mean(axis=0)
        objects.append({
            "mask": comp,
            "colour": names[int(np.argmin(((centres - mean) ** 2).sum(1)))],
            "shape": "square" if fill > 0.9 else "circle" if fill > 0.62 else "triangle",
            "size": "large" if max(height, width) / 2 > 0.1175 * rgb.shape[0] else "small",
            "cx": (xs.min() + xs.max() + 1) / 2, "cy": (ys.min() + ys.max() + 1) / 2,
        })
    return objects


def parse(sentence: str) -> tuple[dict, str | None, dict | None]:
    """'the [size] [colour] shape [REL the [size] [colour] shape]' -> attributes, relation,
    anchor attributes."""
    words = sentence.split()
    relation = None
    for rel in ("left of", "right of", "above", "below"):
        if f" {rel} " in f" {sentence} ":
            relation = rel
    if relation is None:
        head, tail = words, None
    else:
        cut = sentence.index(f" {relation} ")
        head = sentence[:cut].split()
        tail = sentence[cut + len(relation) + 2:].split()

    def attributes(part):
        assert part[0] == "the"
        attrs = {}
        for word in part[1:]:
            key = ("size" if word in ("small", "large") else
                   "colour" if word in COLOURS else "shape")
            attrs[key] = word
        return attrs

    return attributes(head), relation, (attributes(tail) if tail else None)


def satisfies(obj: dict, anchor: dict, relation: str) -> bool:
    return {"left of": obj["cx"] < anchor["cx"], "right of": obj["cx"] > anchor["cx"],
            "above": obj["cy"] < anchor["cy"], "below": obj["cy"] > anchor["cy"]}[relation]


def unnormalise(rgb: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN_255).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD_255).view(3, 1, 1)
    return (rgb * std + mean).permute(1, 2, 0).numpy()


def test_items_follow_the_referring_contract():
    ds = build_dataset("synref", split="val", samples=4)
    item = ds[0]
    assert item["rgb"].shape == (3, 64, 64) and item["rgb"].dtype == torch.float32
    assert item["label"].shape == (64, 64) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) == {0, 1}
    assert item["text"].shape == (20,) and item["text"].dtype == torch.int64
    n = item["text_length"]
    assert (item["text"][:n] > 1).all() and (item["text"][n:] == 0).all()
    assert " ".join(VOCAB[i] for i in item["text"][:n].tolist()) == item["sentence"]
    assert ds.info.task == "referring" and ds.info.modalities == {"rgb": 3, "text": 20}
    assert get_dataset_class("synref").info.modalities == {"rgb": 3, "text": 20}
    assert len(build_dataset("synref", split="train")) == 2000


def test_deterministic_by_seed_and_split():
    a = build_dataset("synref", split="train", samples=6, seed=3)
    b = build_dataset("synref", split="train", samples=6, seed=3)
    for i in range(6):
        x, y = a[i], b[i]
        assert torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["label"], y["label"])
        assert torch.equal(x["text"], y["text"])
    other_seed = build_dataset("synref", split="train", samples=6, seed=4)
    other_split = build_dataset("synref", split="test", samples=6, seed=3)
    assert not torch.equal(a[0]["rgb"], other_seed[0]["rgb"])
    assert not torch.equal(a[0]["rgb"], other_split[0]["rgb"])


def test_expression_identifies_exactly_the_target_from_pixels():
    ds = build_dataset("synref", split="test", samples=60, seed=11)
    relational = 0
    for index in range(len(ds)):
        item, scene = ds[index], ds.scene(index)
        rgb = unnormalise(item["rgb"])
        objects = perceive(rgb)
        assert len(objects) == len(scene.objects), item["sentence"]
        attrs, relation, anchor_attrs = parse(item["sentence"])
        candidates = [o for o in objects if all(o[k] == v for k, v in attrs.items())]
        if relation is not None:
            relational += 1
            assert len(candidates) >= 1
            anchors = [o for o in objects if all(o[k] == v for k, v in anchor_attrs.items())]
            assert len(anchors) == 1, item["sentence"]  # the anchor's description is unique
            candidates = [o for o in candidates if satisfies(o, anchors[0], relation)]
        assert len(candidates) == 1, item["sentence"]
        # ... and the one object the sentence picks out is exactly the labelled mask
        assert np.array_equal(candidates[0]["mask"], item["label"].numpy() == 1)
    assert 15 <= relational <= 45  # relation_fraction 0.5 of 60


def test_relational_scenes_need_the_relation():
    ds = SynRefDataset(split="train", samples=40, relation_fraction=1.0)
    for index in range(len(ds)):
        scene = ds.scene(index)
        target = scene.objects[scene.target]
        twins = [o for o in scene.objects
                 if (o.shape, o.colour, o.size) == (target.shape, target.colour, target.size)]
        assert len(twins) >= 2 and scene.relation in scene.sentence


def test_mask_geometry():
    """Areas of the rasterised shapes against the continuous formulas (within pixelisation)."""
    ds = SynRefDataset(split="val", samples=40, size=96)
    for index in range(len(ds)):
        scene = ds.scene(index)
        for obj in scene.objects:
            area = obj.mask(96).sum()
            expected = {"square": 4 * obj.r ** 2, "circle": np.pi * obj.r ** 2,
                        "triangle": 2 * obj.r ** 2}[obj.shape]
            assert abs(area - expected) <= 4 * obj.r + 4, (obj, area, expected)


def test_bad_options_are_clear():
    with pytest.raises(DataError, match="no split 'testA'"):
        SynRefDataset(split="testA")
    with pytest.raises(DataError, match="flip not allowed"):
        SynRefDataset(split="train", augment={"flip": True})
    with pytest.raises(DataError, match="unknown split"):
        SynRefDataset(split="train", samples={"tran": 3})
    resized = SynRefDataset(split="train", samples=2, augment={"resize": [48, 48]})[0]
    assert resized["rgb"].shape == (3, 48, 48) and resized["label"].shape == (48, 48)
