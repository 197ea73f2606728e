"""RefCOCO, RefCOCO+ and G-Ref referring segmentation (REFER format, as LAVT and ReMamber read it).

Layout (``root`` is the REFER ``data/`` folder):

    <root>/refcoco/{instances.json, refs(unc).p, refs(google).p}
    <root>/refcoco+/{instances.json, refs(unc).p}
    <root>/refcocog/{instances.json, refs(umd).p, refs(google).p}
    <root>/train2014/COCO_train2014_%012d.jpg   (or LAVT's images/mscoco/images/train2014/,
                                                 or ``image_root=``)

``refs(*).p`` is a pickled list of refs ``{ref_id, ann_id, image_id, category_id, split,
file_name, sent_ids, sentences: [{tokens, raw, sent, sent_id}]}`` (pickle: load only files you
trust); ``instances.json`` is COCO (``images``, ``annotations`` with polygon or RLE
``segmentation``). Splits: train, val, testA, testB (unc), test (umd).

One sample per expression (``sampling="expression"``, the default, also what evaluation does);
``sampling="ref"`` gives one sample per ref with a random sentence each time (LAVT training).
The mask is REFER's ``getMask``: the annotation's polygons rasterised and summed, then LAVT's
``annot[mask == 1] = 1``, so label is {0, 1} (pixels covered by two polygons of one object
count as 0, as upstream). Polygons are rasterised with pycocotools when it is installed, else
with Pillow's polygon fill (boundary pixels can differ by one). Text: ``text`` int64 (T,) token
ids, T = ``max_tokens`` (20, ReMamber's CLIP ``max_length``), 0-padded. ``tokenizer="words"``
(default, no download) numbers the lower-cased tokens of the train split's sentences
(0 = pad, 1 = unknown); ``"clip"`` uses open_clip's tokenizer if installed; or pass a callable
``str -> list[int]``. Images are ImageNet-normalised at their original size; ReMamber's
480x480 resize is ``augment: {resize: [480, 480]}`` for training and the protocol's ``resize``
for evaluation (logits resized back to the mask's size with nearest, as ReMamber's test).
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.data.io import CorruptFileError, DataError, MissingPathError, read_image
from bench.data.registry import DatasetInfo, register_dataset
from bench.data.rgbx_folder import Entry, RGBXFolderDataset
from bench.data.transforms import IMAGENET_MEAN_255, IMAGENET_STD_255

IMAGE_FOLDERS = ("train2014", "images/mscoco/images/train2014", "images/train2014")
MAX_TOKENS = 20


def load_refs(path: Path) -> list[dict]:
    if not path.is_file():
        listed = sorted(p.name for p in path.parent.glob("refs(*).p"))
        raise MissingPathError(f"refs file not found (here: {', '.join(listed) or 'none'})", path,
                               kind="missing split file")
    try:
        with path.open("rb") as handle:
            try:
                refs = pickle.load(handle)
            except UnicodeDecodeError:  # Python 2 pickles with non-ASCII str
                handle.seek(0)
                refs = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError) as error:
        raise CorruptFileError(f"cannot unpickle refs ({error})", path) from None
    if not isinstance(refs, list) or (refs and not isinstance(refs[0], dict)):
        raise CorruptFileError("refs file is not a list of ref dicts", path)
    return refs


def load_instances(path: Path) -> dict:
    if not path.is_file():
        raise MissingPathError("COCO instances.json not found", path)
    try:
        instances = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"cannot parse JSON ({error})", path) from None
    for key in ("images", "annotations"):
        if key not in instances:
            raise CorruptFileError(f"COCO instances file has no {key!r}", path)
    return instances


def decode_rle_counts(counts, height: int, width: int) -> np.ndarray:
    """COCO RLE (list of run lengths, or the compressed string) -> (H, W) uint8, column-major."""
    if isinstance(counts, (str, bytes)):
        text = counts.decode() if isinstance(counts, bytes) else counts
        runs, position = [], 0
        while position < len(text):  # maskApi.c rleFrString: 5-bit groups, sign bit, deltas
            value, shift, more = 0, 0, True
            while more:
                code = ord(text[position]) - 48
                value |= (code & 0x1F) << (5 * shift)
                more = bool(code & 0x20)
                position += 1
                shift += 1
                if not more and code & 0x10:
                    value |= -1 << (5 * shift)
            if len(runs) > 2:
                value += runs[-2]
            runs.append(value)
        counts = runs
    flat = np.zeros(height * width, dtype=np.uint8)
    position, value = 0, 0
    for run in counts:
        flat[position:position + run] = value
        position += run
        value = 1 - value
    return flat.reshape(width, height).T


def rasterise_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """REFER ``getMask``: per-polygon masks summed (uint8 counts), or the RLE mask."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size", [height, width])
        return decode_rle_counts(segmentation["counts"], int(size[0]), int(size[1]))
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        coco_mask = None
    if coco_mask is not None:
        rles = coco_mask.frPyObjects(segmentation, height, width)
        return np.sum(coco_mask.decode(rles), axis=2).astype(np.uint8)
    total = np.zeros((height, width), dtype=np.uint8)
    for polygon in segmentation:
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([float(v) for v in polygon], fill=1)
        total += np.asarray(canvas, dtype=np.uint8)
    return total


class WordTokenizer:
    """Lower-cased word tokens numbered by sorted vocabulary: 0 pad, 1 unknown, 2.. words."""

    def __init__(self, sentences):
        words = sorted({w for s in sentences for w in self.split(s)})
        self.ids = {w: i + 2 for i, w in enumerate(words)}

    @staticmethod
    def split(sentence: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", sentence.lower())

    def __call__(self, sentence: str) -> list[int]:
        return [self.ids.get(w, 1) for w in self.split(sentence)]


def clip_tokenizer(max_tokens: int) -> Callable[[str], list[int]]:
    try:
        import open_clip
    except ImportError:
        raise DataError("tokenizer 'clip' needs open_clip (pip install open_clip_torch); or use "
                        "tokenizer: words") from None
    return lambda sentence: open_clip.tokenize([sentence], context_length=max_tokens)[0].tolist()


class _ReferringDataset(RGBXFolderDataset):
    layouts = ("refer",)
    layout_markers = {"refer": "<dataset>/instances.json <dataset>/refs(<split_by>).p train2014/"}
    norm = {"rgb": (IMAGENET_MEAN_255, IMAGENET_STD_255)}
    eight_bit = ("rgb",)
    default_split_by: str
    folder: str

    def __init__(self, root=None, split="train", augment=None, corruption=None, layout="auto",
                 *, split_by: str | None = None, image_root: str | None = None,
                 tokenizer="words", max_tokens: int = MAX_TOKENS, sampling: str = "expression",
                 **options):
        self.split_by = split_by or self.default_split_by
        self.max_tokens = int(max_tokens)
        if sampling not in ("expression", "ref"):
            raise DataError(f"sampling must be 'expression' or 'ref', got {sampling!r}")
        self.sampling = sampling
        self._image_root_option = image_root
        self._tokenizer_option = tokenizer
        super().__init__(root, split, augment, corruption, layout, **options)

    def make_info(self) -> DatasetInfo:
        info = super().make_info()
        return dataclasses.replace(info, modalities={"rgb": 3, "text": self.max_tokens})

    @classmethod
    def detect_layout(cls, root: Path) -> str | None:
        return "refer" if (root / cls.folder).is_dir() else None

    @classmethod
    def available_splits(cls, root: Path, layout: str) -> list[str]:
        refs = load_refs(root / cls.folder / f"refs({cls.default_split_by}).p")
        return sorted({ref["split"] for ref in refs})

    def split_source(self, split: str) -> Path:
        return self.refs_path

    @property
    def refs_path(self) -> Path:
        return self.root / self.folder / f"refs({self.split_by}).p"

    def image_root(self) -> Path:
        if self._image_root_option is not None:
            return Path(self._image_root_option).expanduser()
        for candidate in IMAGE_FOLDERS:
            if (self.root / candidate).is_dir():
                return self.root / candidate
        raise MissingPathError(f"COCO train2014 images not found (tried "
                               f"{', '.join(IMAGE_FOLDERS)}; or pass image_root)",
                               self.root / IMAGE_FOLDERS[0])

    def list_entries(self, split: str) -> list[Entry]:
        refs = load_refs(self.refs_path)
        instances = load_instances(self.root / self.folder / "instances.json")
        self.annotations = {a["id"]: a for a in instances["annotations"]}
        self.images = {i["id"]: i for i in instances["images"]}
        image_root = self.image_root()
        if self._tokenizer_option == "words":
            self.tokenizer = WordTokenizer(s["sent"] for r in refs if r["split"] == "train"
                                           for s in r["sentences"])
        elif self._tokenizer_option == "clip":
            self.tokenizer = clip_tokenizer(self.max_tokens)
        elif callable(self._tokenizer_option):
            self.tokenizer = self._tokenizer_option
        else:
            raise DataError(f"tokenizer must be 'words', 'clip' or a callable, got "
                            f"{self._tokenizer_option!r}")
        entries = []
        for ref in refs:
            if ref["split"] != split:
                continue
            image = self.images.get(ref["image_id"], {})
            file_name = image.get("file_name", f"COCO_train2014_{ref['image_id']:012d}.jpg")
            files = {"rgb": image_root / file_name}
            sentences = [s["sent"] for s in ref["sentences"]]
            meta = {"ref_id": ref["ref_id"], "ann_id": ref["ann_id"], "sentences": sentences}
            if self.sampling == "ref":
                entries.append(Entry(str(ref["ref_id"]), files, meta))
            else:
                entries += [Entry(f"{ref['ref_id']}_{s.get('sent_id', k)}", files,
                                  dict(meta, sentence=k))
                            for k, s in enumerate(ref["sentences"])]
        return entries

    def read_arrays(self, entry: Entry) -> dict[str, np.ndarray]:
        rgb = read_image(entry.files["rgb"])
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)  # grey COCO images, PIL .convert("RGB")
        annotation = self.annotations.get(entry.meta["ann_id"])
        if annotation is None:
            raise DataError(f"ref {entry.meta['ref_id']}: annotation {entry.meta['ann_id']} is "
                            "not in instances.json", self.root / self.folder / "instances.json",
                            kind="bad annotation")
        height, width = rgb.shape[:2]
        counts = rasterise_segmentation(annotation["segmentation"], height, width)
        return {"rgb": rgb[..., :3], "label": (counts == 1).astype(np.uint8)}

    def tokens(self, sentence: str) -> torch.Tensor:
        ids = list(self.tokenizer(sentence))[:self.max_tokens]
        return torch.tensor(ids + [0] * (self.max_tokens - len(ids)), dtype=torch.int64)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        item = super().__getitem__(index)
        sentences = entry.meta["sentences"]
        if "sentence" in entry.meta:
            sentence = sentences[entry.meta["sentence"]]
        else:
            sentence = sentences[int(torch.randint(len(sentences), (1,)).item())]
        item["text"] = self.tokens(sentence)
        return item


def _referring_info(name: str) -> DatasetInfo:
    return DatasetInfo(name=name, modalities={"rgb": 3, "text": MAX_TOKENS},
                       classes=["background", "object"], palette=[(0, 0, 0), (255, 255, 255)],
                       ignore_index=255, task="referring", x_kind="text",
                       protocol={"mode": "whole", "resize": [480, 480], "keep_ratio": False,
                                 "resize_back": "nearest"})


@register_dataset("refcoco")
class RefCOCODataset(_ReferringDataset):
    info = _referring_info("refcoco")
    folder, default_split_by = "refcoco", "unc"


@register_dataset("refcoco+")
class RefCOCOPlusDataset(_ReferringDataset):
    info = _referring_info("refcoco+")
    folder, default_split_by = "refcoco+", "unc"


@register_dataset("refcocog")
class RefCOCOgDataset(_ReferringDataset):
    info = _referring_info("refcocog")
    folder, default_split_by = "refcocog", "umd"
