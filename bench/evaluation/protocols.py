"""Evaluation protocols: whole image, sliding window, multi-scale + flip, named next to every mIoU.

``infer(model, inputs, num_classes, protocol)`` returns class scores (B, K, H, W) at the
inputs' resolution; ``argmax(1)`` is the prediction. ``describe(protocol)`` is the short name
printed with every mIoU. A protocol is a dict (a dataset's ``info.protocol``, a suite's
``eval.protocol``):

    mode: whole | slide
    crop: [h, w]                slide window size
    stride: [h, w] | stride_rate: r     stride, or ceil(crop * r) per axis (Sigma: 2/3)
    windows: sigma | mmseg | ssrs       how windows are laid out (below); default sigma
    score: exp | logits | softmax       what each window contributes (default per windows)
    average: bool                       divide by the number of windows covering each pixel
    scales: [1.0]               every scale's scores are resized to the input size and summed
    flip: false                 add the horizontally flipped pass, flipped back
    resize: [h, w]              resize the inputs first (mmseg test ``Resize``); scores are
    keep_ratio: true            resized back; keep_ratio fits [h, w] keeping the aspect ratio
    resize_back: bilinear       how scores are resized back to the label's size: bilinear, or
                                nearest (ReMamber's evaluation, yyh-rain-song/ReMamber)

Window layouts, each reproducing its upstream evaluator:

- ``sigma`` (zifuwan/Sigma ``engine/evaluator.py`` ``sliding_eval_rgbX`` / ``scale_process_rgbX``):
  if the (scaled) image is no larger than the crop in either dimension it is padded (centred,
  zeros) to at least the crop, run once and the padding cut off; otherwise windows start at
  ``i * stride`` and are moved back inside at the far edge (``s = min(s + crop, H) - crop``), with
  ``ceil((H - crop) / stride) + 1`` per axis. Per window, the logits of the image and of its
  h-flip (flipped back) are summed and then ``exp`` is applied; window scores are summed (the
  ``/ count`` is commented out upstream), scales summed after a bilinear resize to the input
  size, then argmax. Sigma's code indexes the column start with ``stride[0]`` and the window
  width with ``crop_size[0]`` (an axis swap that only matters for non-square crops when a scaled
  image exceeds the crop in both dimensions, e.g. NYU at scale 1.25); we use the intended axes.
- ``mmseg`` (mmseg ``EncoderDecoder.slide_inference``): ``max(H - crop + stride - 1, 0) //
  stride + 1`` windows per axis, clamped inside the image (a window is smaller than the crop
  when the image is), logits averaged over the windows covering each pixel; flip and scales
  average softmax scores (``SegTTAModel``) when ``score: softmax``.
- ``ssrs`` (SSRS / MS2MNet ``sliding_window`` + ``test``): starts ``0, stride, 2 stride, ...
  < H``, each start past ``H - crop`` replaced by ``H - crop`` (so the edge window is counted
  once per replaced start), logits summed, argmax.

Inputs are already normalised; resizing them is the same as Sigma's resizing raw images before
normalising (bilinear weights sum to 1). Every 4-D tensor in ``inputs`` with the image's size
(rgb, x, ...) goes through the same resize, window and flip; other entries (``text``) are
passed unchanged.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from models.errors import UserError

WINDOW_DEFAULTS = {"sigma": ("exp", False), "mmseg": ("logits", True), "ssrs": ("logits", False)}
_KEYS = ("mode", "crop", "stride", "stride_rate", "windows", "score", "average", "scales",
         "flip", "resize", "keep_ratio", "resize_back")


class ProtocolError(UserError, ValueError):
    pass


def _pair(value, key):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in value):
        raise ProtocolError(f"protocol {key} must be [h, w] with positive numbers, got {value!r}")
    return int(value[0]), int(value[1])


def resolve(protocol: dict | None) -> dict:
    """Validate ``protocol`` and fill in the defaults (the form ``infer`` uses)."""
    protocol = dict(protocol or {"mode": "whole"})
    unknown = sorted(set(protocol) - set(_KEYS))
    if unknown:
        raise ProtocolError(f"unknown protocol key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(_KEYS)})")
    mode = protocol.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ProtocolError(f"protocol mode must be 'whole' or 'slide', got {mode!r}")
    windows = protocol.get("windows", "sigma")
    if windows not in WINDOW_DEFAULTS:
        raise ProtocolError(f"protocol windows must be one of {', '.join(WINDOW_DEFAULTS)}, "
                            f"got {windows!r}")
    score, average = WINDOW_DEFAULTS[windows] if mode == "slide" else ("logits", False)
    score = protocol.get("score", score)
    if score not in ("exp", "logits", "softmax"):
        raise ProtocolError(f"protocol score must be exp, logits or softmax, got {score!r}")
    scales = protocol.get("scales", [1.0])
    if not isinstance(scales, (list, tuple)) or not scales or any(
            not isinstance(s, (int, float)) or s <= 0 for s in scales):
        raise ProtocolError(f"protocol scales must be a list of positive numbers, got {scales!r}")
    resolved = {"mode": mode, "windows": windows, "score": score,
                "average": bool(protocol.get("average", average)),
                "scales": [float(s) for s in scales], "flip": bool(protocol.get("flip", False)),
                "resize": _pair(protocol["resize"], "resize") if protocol.get("resize") else None,
                "keep_ratio": bool(protocol.get("keep_ratio", True)),
                "resize_back": protocol.get("resize_back", "bilinear")}
    if resolved["resize_back"] not in ("bilinear", "nearest"):
        raise ProtocolError(f"protocol resize_back must be bilinear or nearest, got "
                            f"{resolved['resize_back']!r}")
    if mode == "slide":
        if "crop" not in protocol:
            raise ProtocolError("protocol mode 'slide' needs crop: [h, w]")
        crop = _pair(protocol["crop"], "crop")
        if "stride" in protocol:
            stride = _pair(protocol["stride"], "stride")
        elif "stride_rate" in protocol:
            rate = protocol["stride_rate"]
            if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
                raise ProtocolError(f"protocol stride_rate must be in (0, 1], got {rate!r}")
            stride = tuple(int(math.ceil(c * rate)) for c in crop)  # Sigma: ceil(crop * rate)
        else:
            raise ProtocolError("protocol mode 'slide' needs stride: [h, w] or stride_rate")
        resolved.update(crop=crop, stride=stride)
    return resolved


def describe(protocol: dict | None) -> str:
    """Short name: 'whole', 'slide 480×640/320×427', 'ms(0.75,1,1.25)+flip slide ...'."""
    p = resolve(protocol)
    parts = []
    if p["scales"] != [1.0] or p["flip"]:
        ms = f"ms({','.join(f'{s:g}' for s in p['scales'])})" if p["scales"] != [1.0] else ""
        parts.append(ms + ("+flip" if ms and p["flip"] else "flip" if p["flip"] else ""))
    if p["resize"]:
        h, w = p["resize"]
        parts.append(f"resize{'≤' if p['keep_ratio'] else ' '}{h}×{w}")
        if p["resize_back"] != "bilinear":
            parts.append(f"({p['resize_back']} back)")
    if p["mode"] == "whole":
        parts.append("whole")
        if p["score"] != "logits":
            parts.append(p["score"])
    else:
        (ch, cw), (sh, sw) = p["crop"], p["stride"]
        stride = f"{sh}" if sh == sw else f"{sh}×{sw}"
        text = f"slide {ch}×{cw}/{stride}"
        if p["windows"] != "sigma":
            text += f" ({p['windows']})"
        if (p["score"], p["average"]) != WINDOW_DEFAULTS[p["windows"]]:
            text += f" [{p['score']} {'mean' if p['average'] else 'sum'}]"
        parts.append(text)
    return " ".join(parts)


# ------------------------------------------------------------------------------------ inference

def _resize(tensor: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest")
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))  # cv2.resize(fx=s) rounds the output size


def _window_score(run: Callable, images: dict, p: dict) -> torch.Tensor:
    logits = run(images)
    if p["score"] == "softmax":
        score = logits.softmax(1)
        if p["flip"]:
            score = score + run({k: v.flip(-1) for k, v in images.items()}).softmax(1).flip(-1)
        return score
    if p["flip"]:
        logits = logits + run({k: v.flip(-1) for k, v in images.items()}).flip(-1)
    return logits.exp() if p["score"] == "exp" else logits


def _starts(length: int, crop: int, stride: int, windows: str) -> list[int]:
    if windows == "sigma":
        count = int(math.ceil((length - crop) / stride)) + 1
        return [min(i * stride + crop, length) - crop for i in range(count)]
    if windows == "mmseg":
        count = max(length - crop + stride - 1, 0) // stride + 1
        return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]
    return [min(start, max(length - crop, 0)) for start in range(0, length, stride)]  # ssrs


def _slide(run: Callable, images: dict, p: dict) -> torch.Tensor:
    height, width = next(iter(images.values())).shape[-2:]
    (crop_h, crop_w), (stride_h, stride_w) = p["crop"], p["stride"]
    if p["windows"] == "sigma" and (height <= crop_h or width <= crop_w):
        # Sigma: one pass on the image padded (centred, zeros) to at least the crop.
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        top, left = pad_h // 2, pad_w // 2
        padding = (left, pad_w - left, top, pad_h - top)
        score = _window_score(run, {k: F.pad(v, padding) for k, v in images.items()}, p)
        return score[..., top:top + height, left:left + width]
    total = count = None
    for top in _starts(height, crop_h, stride_h, p["windows"]):
        for left in _starts(width, crop_w, stride_w, p["windows"]):
            window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
            score = _window_score(run, {k: v[window] for k, v in images.items()}, p)
            if total is None:
                total = score.new_zeros(score.shape[:2] + (height, width))
                count = score.new_zeros((1, 1, height, width))
            total[window] += score
            count[window] += 1
    return total / count if p["average"] else total


def infer(model, inputs: dict, num_classes: int, protocol: dict | None) -> torch.Tensor:
    """Scores (B, K, H, W) at the inputs' resolution under ``protocol`` (see module docstring)."""
    p = resolve(protocol)
    reference = inputs["rgb"] if "rgb" in inputs else next(
        v for v in inputs.values() if torch.is_tensor(v) and v.dim() == 4)
    height, width = reference.shape[-2:]
    images = {k: v for k, v in inputs.items()
              if torch.is_tensor(v) and v.dim() == 4 and tuple(v.shape[-2:]) == (height, width)}
    others = {k: v for k, v in inputs.items() if k not in images}

    def run(window_images: dict) -> torch.Tensor:
        logits = model({**others, **window_images})
        size = tuple(next(iter(window_images.values())).shape[-2:])
        if logits.dim() != 4 or tuple(logits.shape[-2:]) != size:
            raise ProtocolError(f"model returned {tuple(logits.shape)} for inputs of size "
                                f"{size}; the model contract is logits (B, K, H, W) at input size")
        if logits.shape[1] != num_classes and not (logits.shape[1] == 1 and num_classes == 2):
            raise ProtocolError(f"model returned {logits.shape[1]} channels for "
                                f"{num_classes} classes")
        return logits

    working = (height, width)
    if p["resize"]:
        working = (_resize_target(height, width, p["resize"], p["keep_ratio"]))
        images = {k: _resize(v, working) for k, v in images.items()}
    total = None
    with torch.no_grad():
        for scale in p["scales"]:
            size = (_round_half_up(working[0] * scale), _round_half_up(working[1] * scale))
            scaled = {k: _resize(v, size) for k, v in images.items()}
            score = _slide(run, scaled, p) if p["mode"] == "slide" else _window_score(
                run, scaled, p)
            score = _resize(score, working)
            total = score if total is None else total + score
    return _resize(total, (height, width), p["resize_back"])


def _resize_target(height: int, width: int, target: tuple[int, int], keep_ratio: bool):
    if not keep_ratio:
        return tuple(target)
    from bench.data.transforms import keep_ratio_size  # mmcv rescale_size
    return keep_ratio_size(height, width, target)
