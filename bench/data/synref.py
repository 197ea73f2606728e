"""SynRef: a synthetic referring-segmentation set, so referring models (ReMamber) train and
evaluate here without RefCOCO.

A scene is a grey, lightly textured background with 3-5 non-touching flat shapes, each with
three attributes from a fixed vocabulary (shape: square / circle / triangle; colour: red / green
/ blue / yellow; size: small / large). One object is the target; its expression names it
uniquely, e.g. "the large red square left of the blue circle" or "the green triangle", and the
label is the target's mask (1) on background (0). Everything is generated on the fly from
``(seed, split, index)``: no files, the same item every time.

Expressions come in two kinds (``relation_fraction`` of the scenes are relational):

- attribute: "the" + the shortest of (shape), (colour shape), (size shape), (size colour shape)
  that only the target has;
- relational: the target gets a twin of the same size, colour and shape, so attributes alone
  cannot separate them; the expression is "the [size] colour shape REL the [size] colour shape"
  with REL one of left of / right of / above / below, an anchor that its own description
  identifies uniquely, the target on the right side of the anchor by at least ``margin`` pixels
  (centre to centre along the axis) and every other object of the target's description on
  the wrong side (or level with it).

Geometry: a shape of half-extent r centred at (cx, cy) covers the pixels whose centres satisfy
|x - cx| <= r and |y - cy| <= r (square), (x - cx)^2 + (y - cy)^2 <= r^2 (circle), or lie in the
upright isosceles triangle with apex (cx, cy - r) and base y = cy + r of width 2r (triangle);
the bounding boxes of two objects are at least 3 px apart, so every object is its own connected
component. Small shapes have r in [0.07, 0.095] x side, large ones in [0.14, 0.17] x side.

Items follow the referring contract of ``bench/data/registry.py`` (as RefCOCO's): ``rgb``
float32 (3, H, W) ImageNet-normalised, ``text`` int64 (20,) word ids 0-padded
(``VOCAB``: 0 pad, 1 unknown; or a local Hugging Face tokenizer's ids with ``tokenizer:
{hf_path: ...}``), ``text_length`` the number of real tokens, ``sentence`` the
expression, ``label`` int64 (H, W) in {0, 1}, ``name``. ``augment`` accepts ``resize`` and
``scale`` only: flips would swap left and right, crops can cut the target, and hue shifts change
colour names.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.corruptions import apply_corruption, check_applicable
from bench.data.io import DataError
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.transforms import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    AugmentSettings,
    finish_sample,
    parse_augment,
)

SHAPES = ("square", "circle", "triangle")
#: colour name -> RGB centre (uint8); objects jitter each channel by up to +-15
COLOURS = {"red": (215, 45, 40), "green": (45, 170, 65), "blue": (45, 85, 215),
           "yellow": (225, 200, 40)}
#: size name -> half-extent range as a fraction of the image side
SIZES = {"small": (0.07, 0.095), "large": (0.14, 0.17)}
RELATIONS = ("left of", "right of", "above", "below")
#: the fixed word vocabulary; a word's id is its index
VOCAB = ("<pad>", "<unk>", "the", *SIZES, *COLOURS, *SHAPES, "left", "right", "of", "above",
         "below")
WORD_IDS = {word: i for i, word in enumerate(VOCAB)}
MAX_TOKENS = 20
DEFAULT_SAMPLES = {"train": 2000, "val": 200, "test": 200}
#: attribute descriptions tried for a target, shortest first
DESCRIPTIONS = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))
ANCHOR_DESCRIPTIONS = (("colour", "shape"), ("size", "colour", "shape"))
BBOX_GAP = 3.0
ALLOWED_AUGMENT = ("resize", "scale")


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float

    def attribute(self, name: str) -> str:
        return getattr(self, name)

    def matches(self, description: tuple[str, ...], other: "Shape") -> bool:
        return all(self.attribute(a) == other.attribute(a) for a in description)

    def words(self, description: tuple[str, ...]) -> list[str]:
        return [self.attribute(a) for a in ("size", "colour", "shape") if a in description]

    def mask(self, side: int) -> np.ndarray:
        """(side, side) bool: the pixels whose centres lie inside the shape."""
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
        dx, dy = xs - self.cx, ys - self.cy
        if self.shape == "square":
            return (np.abs(dx) <= self.r) & (np.abs(dy) <= self.r)
        if self.shape == "circle":
            return dx ** 2 + dy ** 2 <= self.r ** 2
        depth = dy + self.r  # 0 at the apex, 2r at the base
        return (depth >= 0) & (depth <= 2 * self.r) & (np.abs(dx) <= depth / 2)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Shape, ...]
    target: int
    sentence: str
    #: relational expressions only
    anchor: int | None = None
    relation: str | None = None


def relation_offset(obj: Shape, anchor: Shape, relation: str) -> float:
    """How far ``obj``'s centre is on the ``relation`` side of ``anchor``'s (pixels; > 0 when
    the relation holds). Image y grows downwards, so "above" means a smaller y."""
    if relation == "left of":
        return anchor.cx - obj.cx
    if relation == "right of":
        return obj.cx - anchor.cx
    if relation == "above":
        return anchor.cy - obj.cy
    if relation == "below":
        return obj.cy - anchor.cy
    raise ValueError(f"unknown relation {relation!r}")


def word_ids(sentence: str) -> list[int]:
    """Word ids from ``VOCAB`` (unknown words -> 1)."""
    return [WORD_IDS.get(w, 1) for w in sentence.lower().split()]


def pad_ids(ids: list[int], max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    ids = list(ids)[:max_tokens]
    return torch.tensor(ids + [0] * (max_tokens - len(ids)), dtype=torch.int64)


def tokenize(sentence: str, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """``VOCAB`` word ids, 0-padded to ``max_tokens``."""
    return pad_ids(word_ids(sentence), max_tokens)


def hf_tokenizer(hf_path: str):
    """A local Hugging Face tokenizer as ``str -> list[int]`` (with its special tokens), for a
    text encoder loaded from the same folder (``text_encoder: {hf_path: ...}``)."""
    try:
        import transformers
    except ImportError:
        raise DataError("synref tokenizer hf_path needs the transformers package "
                        "(pip install transformers); or use tokenizer: words") from None
    from pathlib import Path
    path = Path(hf_path).expanduser()
    if not path.is_dir():
        raise DataError("Hugging Face tokenizer folder not found", path, kind="missing file")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return lambda sentence: tokenizer(sentence, truncation=True,
                                      max_length=MAX_TOKENS)["input_ids"]


class SceneGenerator:
    """Draws scenes and their unique expressions (see the module docstring)."""

    def __init__(self, side: int = 64, min_objects: int = 3, max_objects: int = 5,
                 relation_fraction: float = 0.5, margin: float | None = None):
        if side < 32:
            raise DataError(f"synref size must be at least 32 px, got {side}")
        if not 2 <= min_objects <= max_objects <= 6:
            raise DataError(f"synref needs 2 <= min_objects <= max_objects <= 6, got "
                            f"{min_objects}, {max_objects}")
        if not 0.0 <= relation_fraction <= 1.0:
            raise DataError(f"synref relation_fraction must be in [0, 1], got {relation_fraction}")
        self.side = int(side)
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.relation_fraction = float(relation_fraction)
        self.margin = 0.08 * side if margin is None else float(margin)

    # ------------------------------------------------------------------------------ layout
    def _attributes(self, rng: np.random.Generator) -> dict:
        return {"shape": SHAPES[rng.integers(len(SHAPES))],
                "colour": list(COLOURS)[rng.integers(len(COLOURS))],
                "size": list(SIZES)[rng.integers(len(SIZES))]}

    def _place(self, rng: np.random.Generator, attributes: list[dict]) -> list[Shape] | None:
        placed: list[Shape] = []
        for attrs in attributes:
            lo, hi = SIZES[attrs["size"]]
            r = float(rng.uniform(lo, hi)) * self.side
            for _ in range(50):
                cx, cy = rng.uniform(r + 1, self.side - r - 1, size=2)
                if all(abs(cx - o.cx) >= r + o.r + BBOX_GAP or abs(cy - o.cy) >= r + o.r + BBOX_GAP
                       for o in placed):
                    placed.append(Shape(cx=float(cx), cy=float(cy), r=r, **attrs))
                    break
            else:
                return None
        return placed

    # -------------------------------------------------------------------------- expressions
    @staticmethod
    def attribute_expression(objects: list[Shape], target: int) -> str | None:
        for description in DESCRIPTIONS:
            matching = [i for i, o in enumerate(objects) if o.matches(description, objects[target])]
            if matching == [target]:
                return " ".join(["the", *objects[target].words(description)])
        return None

    def relational_expression(self, objects: list[Shape], target: int,
                              rng: np.random.Generator) -> tuple[str, int, str] | None:
        own = ("size", "colour", "shape") if rng.random() < 0.5 else ("colour", "shape")
        candidates = [i for i, o in enumerate(objects) if o.matches(own, objects[target])]
        anchors = [i for i in rng.permutation(len(objects)) if i not in candidates]
        for anchor in anchors:
            anchor_words = None
            for description in ANCHOR_DESCRIPTIONS:
                same = [i for i, o in enumerate(objects) if o.matches(description, objects[anchor])]
                if same == [anchor]:
                    anchor_words = objects[anchor].words(description)
                    break
            if anchor_words is None:
                continue
            for k in rng.permutation(len(RELATIONS)):
                relation = RELATIONS[k]
                if relation_offset(objects[target], objects[anchor], relation) < self.margin:
                    continue
                if any(relation_offset(objects[c], objects[anchor], relation) > -self.margin / 2
                       for c in candidates if c != target):
                    continue
                words = ["the", *objects[target].words(own), *relation.split(), "the",
                         *anchor_words]
                return " ".join(words), int(anchor), relation
        return None

    def scene(self, rng: np.random.Generator) -> Scene:
        relational = rng.random() < self.relation_fraction  # once: retries keep the kind
        for _ in range(500):
            count = int(rng.integers(self.min_objects, self.max_objects + 1))
            attributes = [self._attributes(rng) for _ in range(count)]
            if relational:
                attributes[1] = dict(attributes[0])  # a twin: attributes alone cannot separate
            objects = self._place(rng, attributes)
            if objects is None:
                continue
            if relational:
                found = self.relational_expression(objects, 0, rng)
                if found is not None:
                    sentence, anchor, relation = found
                    return Scene(tuple(objects), 0, sentence, anchor, relation)
            else:
                sentence = self.attribute_expression(objects, 0)
                if sentence is not None:
                    return Scene(tuple(objects), 0, sentence)
        raise RuntimeError("synref: no scene with a unique expression in 500 draws; "
                           "use a larger size or fewer objects")

    # ---------------------------------------------------------------------------- rendering
    def render(self, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) float32 RGB in 0..255 and the (H, W) uint8 target mask."""
        side = self.side
        grey = rng.uniform(100, 160)
        ys, xs = np.mgrid[0:side, 0:side] / side
        angle = rng.uniform(0, 2 * np.pi)
        gradient = 15.0 * ((xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle))
        image = np.repeat((grey + gradient)[..., None], 3, axis=2)
        label = np.zeros((side, side), dtype=np.uint8)
        for index, obj in enumerate(scene.objects):
            mask = obj.mask(side)
            colour = np.asarray(COLOURS[obj.colour], dtype=np.float64) + rng.uniform(-15, 15, 3)
            image[mask] = colour
            if index == scene.target:
                label[mask] = 1
        image = image + rng.normal(0.0, 4.0, image.shape)
        return np.clip(image, 0, 255).astype(np.float32), label


@register_dataset("synref")
class SynRefDataset(Dataset):
    """Synthetic referring segmentation (module docstring). Options: ``size`` (image side, 64),
    ``samples`` (per-split counts, default 2000 / 200 / 200 for train / val / test, or one int
    for every split), ``seed``, ``min_objects`` / ``max_objects`` (3 / 5),
    ``relation_fraction`` (0.5), ``tokenizer`` ("words", or ``{hf_path: /local/model}``).
    ``root`` is accepted and ignored. Expressions are padded to
    ``MAX_TOKENS`` = 20 tokens, ReMamber's CLIP ``max_length`` (its ImageTextCorr has one input
    channel per token), as RefCOCO's loader does."""

    info = DatasetInfo(name="synref", modalities={"rgb": 3, "text": MAX_TOKENS},
                       classes=["background", "object"], palette=[(0, 0, 0), (255, 255, 255)],
                       ignore_index=255, task="referring", x_kind="text",
                       protocol={"mode": "whole"})
    norm = {"rgb": (IMAGENET_MEAN_255, IMAGENET_STD_255)}

    def __init__(self, root=None, split: str = "train", augment=None, corruption=None, *,
                 size: int = 64, samples: dict | int | None = None, seed: int = 0,
                 min_objects: int = 3, max_objects: int = 5,
                 relation_fraction: float = 0.5, tokenizer: str | dict = "words",
                 corruption_seed: int = 0):
        self.generator = SceneGenerator(size, min_objects, max_objects, relation_fraction)
        self.seed = int(seed)
        if tokenizer == "words":
            self.tokenizer = word_ids
        elif isinstance(tokenizer, dict) and set(tokenizer) == {"hf_path"}:
            self.tokenizer = hf_tokenizer(tokenizer["hf_path"])
        else:
            raise DataError(f"synref tokenizer must be 'words' or {{hf_path: /local/model}}, "
                            f"got {tokenizer!r}")
        counts = dict(DEFAULT_SAMPLES)
        if isinstance(samples, int):
            counts = dict.fromkeys(counts, samples)
        elif samples is not None:
            unknown = sorted(set(samples) - set(counts))
            if unknown:
                raise DataError(f"synref samples: unknown split(s) {', '.join(unknown)} "
                                f"(splits: {', '.join(counts)})")
            counts.update({k: int(v) for k, v in samples.items()})
        parts = split.split("+")
        for part in parts:
            if part not in counts:
                raise DataError(f"synref has no split {part!r} (splits: {', '.join(counts)})",
                                kind="empty split")
        self.split = split
        self.index = [(part, i) for part in parts for i in range(counts[part])]
        if not self.index:
            raise DataError(f"synref split {split!r} has no samples", kind="empty split")
        self.augment = self._check_augment(parse_augment(augment))
        self.corruption = check_applicable(corruption, self.info.modalities)
        self.corruption_seed = int(corruption_seed)

    @classmethod
    def check_options(cls, size: int = 64, samples=None, seed: int = 0, min_objects: int = 3,
                      max_objects: int = 5, relation_fraction: float = 0.5,
                      tokenizer: str | dict = "words", corruption_seed: int = 0) -> None:
        """Refuse bad option values at suite validation (the harness calls this hook)."""
        SceneGenerator(size, min_objects, max_objects, relation_fraction)
        if samples is not None and not isinstance(samples, (int, dict)):
            raise DataError(f"synref samples must be an int or a split -> count mapping, got "
                            f"{samples!r}")
        if isinstance(samples, dict):
            unknown = sorted(set(samples) - set(DEFAULT_SAMPLES))
            if unknown:
                raise DataError(f"synref samples: unknown split(s) {', '.join(unknown)} "
                                f"(splits: {', '.join(DEFAULT_SAMPLES)})")

    @staticmethod
    def _check_augment(settings: AugmentSettings | None) -> AugmentSettings | None:
        if settings is None:
            return None
        banned = [k for k in ("crop", "flip", "photometric", "scale_choices")
                  if getattr(settings, k) not in (None, "", False)]
        if banned:
            raise DataError(f"synref augment: {', '.join(banned)} not allowed (flips swap left "
                            f"and right, crops can cut the target, hue shifts rename colours); "
                            f"allowed: {', '.join(ALLOWED_AUGMENT)}")
        return settings

    def __len__(self) -> int:
        return len(self.index)

    def _rng(self, part: str, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, zlib.crc32(part.encode()), i, stream])

    def scene(self, index: int) -> Scene:
        """The scene behind item ``index`` (objects, target, expression)."""
        part, i = self.index[index]
        return self.generator.scene(self._rng(part, i, 0))

    def __getitem__(self, index: int) -> dict:
        part, i = self.index[index]
        scene = self.scene(index)
        rgb, label = self.generator.render(scene, self._rng(part, i, 1))
        sample = {"rgb": rgb, "label": label.astype(np.int64)}
        if not self.corruption.is_clean:
            sample = apply_corruption(sample, self.corruption, index, self.corruption_seed)
        rng = None
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        item = finish_sample(sample, self.norm, f"{part}_{i:05d}", self.augment,
                             self.info.ignore_index, rng)
        ids = self.tokenizer(scene.sentence)[:MAX_TOKENS]
        item["text"] = pad_ids(ids)
        item["text_length"] = len(ids)
        item["sentence"] = scene.sentence
        return item

    def __repr__(self) -> str:
        return (f"SynRefDataset(split={self.split!r}, n={len(self)}, size={self.generator.side}, "
                f"seed={self.seed})")
