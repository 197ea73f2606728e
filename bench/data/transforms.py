"""Train-time augmentation and per-modality normalisation, the same for every modality.

``augment`` (a dataset's constructor keyword, a suite's ``train.augment``) is a dict; None means
evaluation: no random transform, full resolution, normalisation only. Keys, all optional:

    resize: [h, w]          fixed resize ignoring the aspect ratio, before anything else
                            (ReMamber: every image to 480x480, the mask with nearest)
    scale: [lo, hi]         random resize ratio, uniform in [lo, hi] (mmseg ``ratio_range``)
    scale_choices: [...]    random ratio drawn from a list (Sigma ``train_scale_array``
                            0.5, 0.75, 1, 1.25, 1.5, 1.75)
    base_size: [h, w]       with scale: mmseg ``RandomResize(scale=base_size)``: the ratio
                            multiplies base_size and the image is rescaled keeping its aspect
                            ratio to fit it; without base_size the ratio multiplies the image's
                            own size (Sigma ``random_scale``: int(h*s), int(w*s))
    crop: [h, w]            random crop (mmseg ``RandomCrop``); images smaller than the crop are
                            padded after normalisation with 0 (images) and the ignore index
                            (labels), as Sigma's ``random_crop_pad_to_shape`` and mmseg's
                            ``seg_pad_val`` do (we pad bottom/right; Sigma pads centred)
    cat_max_ratio: 0.75     mmseg: redraw the crop up to 10 times until no single class covers
                            this fraction of the labelled pixels
    flip: true | "h" | "hv" horizontal flip with p = 0.5; "hv" adds a vertical flip with
                            p = 0.5 (MS2MNet's random v/h flips)
    photometric: true       mmseg ``PhotoMetricDistortion`` on the RGB modality (8-bit range):
                            brightness +-32, contrast and saturation x[0.5, 1.5], hue +-18
                            (OpenCV's 180-step hue, done in Pillow's 256-step HSV)

Resampling: bilinear (half-pixel centres, no antialias, like ``cv2.INTER_LINEAR``) for image
modalities, nearest for labels, identical geometry for all. Randomness comes from the
``numpy.random.Generator`` the dataset passes, which it seeds from torch's RNG, so
``torch.manual_seed`` and DataLoader worker seeding make runs reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.errors import UserError

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


class AugmentConfigError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class AugmentSettings:
    resize: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    scale_choices: tuple[float, ...] | None = None
    base_size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    cat_max_ratio: float = 1.0
    flip: str = ""  # "", "h" or "hv"
    photometric: bool = False


_AUGMENT_KEYS = ("resize", "scale", "scale_choices", "base_size", "crop", "cat_max_ratio",
                 "flip", "photometric")


def _pair(value, key, kind=int):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise AugmentConfigError(f"augment.{key} must be [h, w] (or one number), got {value!r}")
    try:
        pair = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise AugmentConfigError(f"augment.{key} must hold numbers, got {value!r}") from None
    if any(v <= 0 for v in pair):
        raise AugmentConfigError(f"augment.{key} must be positive, got {value!r}")
    return pair


def parse_augment(augment: dict | AugmentSettings | None) -> AugmentSettings | None:
    """Validate a suite's augment dict; unknown keys are errors that list the known ones."""
    if augment is None or isinstance(augment, AugmentSettings):
        return augment
    if not isinstance(augment, dict):
        raise AugmentConfigError(f"augment must be a mapping, got {augment!r}")
    unknown = sorted(set(augment) - set(_AUGMENT_KEYS))
    if unknown:
        raise AugmentConfigError(f"unknown augment key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(_AUGMENT_KEYS)})")
    fields = {}
    for key in ("resize", "base_size", "crop"):
        if augment.get(key) is not None:
            fields[key] = _pair(augment[key], key)
    if augment.get("scale") is not None:
        lo, hi = _pair(augment["scale"], "scale", float)
        if lo > hi:
            raise AugmentConfigError("augment.scale must be [lo, hi] with lo <= hi, "
                                     f"got {[lo, hi]}")
        fields["scale"] = (lo, hi)
    if augment.get("scale_choices") is not None:
        choices = augment["scale_choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise AugmentConfigError("augment.scale_choices must be a non-empty list")
        fields["scale_choices"] = tuple(float(c) for c in choices)
    if "scale" in fields and "scale_choices" in fields:
        raise AugmentConfigError("give augment.scale or augment.scale_choices, not both")
    if augment.get("cat_max_ratio") is not None:
        ratio = float(augment["cat_max_ratio"])
        if not 0.0 < ratio <= 1.0:
            raise AugmentConfigError(f"augment.cat_max_ratio must be in (0, 1], got {ratio}")
        fields["cat_max_ratio"] = ratio
    flip = augment.get("flip", False)
    if flip is True:
        flip = "h"
    if flip in (False, None):
        flip = ""
    if flip not in ("", "h", "hv"):
        raise AugmentConfigError(f"augment.flip must be true, false, 'h' or 'hv', got {flip!r}")
    fields["flip"] = flip
    fields["photometric"] = bool(augment.get("photometric", False))
    return AugmentSettings(**fields)


# ------------------------------------------------------------------------------------ resampling

def resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float -> (h, w, C) bilinear, half-pixel centres (cv2.INTER_LINEAR geometry)."""
    if array.shape[:2] == tuple(size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
    out = F.interpolate(tensor[None], size=tuple(size), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int -> (h, w) nearest (source index floor(dst * in / out), cv2.INTER_NEAREST)."""
    if label.shape == tuple(size):
        return label
    tensor = torch.from_numpy(np.ascontiguousarray(label)).to(torch.float64)
    out = F.interpolate(tensor[None, None], size=tuple(size), mode="nearest")
    return out[0, 0].to(torch.int64).numpy()


def keep_ratio_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest size with the same aspect ratio that fits ``target``
    (long edge <= max(target), short edge <= min(target)), rounded half up."""
    factor = min(max(target) / max(height, width), min(target) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


# ---------------------------------------------------------------------------------- augmentation

def _random_crop_box(label, crop, settings, ignore_index, rng):
    height, width = label.shape
    margin_h, margin_w = max(height - crop[0], 0), max(width - crop[1], 0)

    def draw():
        top = int(rng.integers(0, margin_h + 1))
        left = int(rng.integers(0, margin_w + 1))
        return top, left

    top, left = draw()
    if settings.cat_max_ratio < 1.0:
        # mmseg RandomCrop: up to 10 draws until the largest class is below cat_max_ratio.
        for _ in range(10):
            window = label[top:top + crop[0], left:left + crop[1]]
            _, counts = np.unique(window[window != ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < settings.cat_max_ratio:
                break
            top, left = draw()
    return top, left


def photometric_distortion(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` on an 8-bit-range (H, W, 3) image; returns float32."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise AugmentConfigError("augment.photometric needs a 3-channel RGB modality, got "
                                 f"{rgb.shape[2] if rgb.ndim == 3 else 1} channel(s)")

    def to_uint8(image):  # mmseg clips and casts to uint8 after every step
        return np.clip(image, 0, 255).astype(np.uint8)

    image = to_uint8(rgb)
    if rng.integers(2):
        image = to_uint8(image.astype(np.float32) + rng.uniform(-32, 32))
    contrast_first = bool(rng.integers(2))

    def contrast(image):
        if rng.integers(2):
            image = to_uint8(image.astype(np.float32) * rng.uniform(0.5, 1.5))
        return image

    if contrast_first:
        image = contrast(image)
    if rng.integers(2):
        hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.float32)
        hsv[..., 1] = hsv[..., 1] * rng.uniform(0.5, 1.5)
        image = np.asarray(Image.fromarray(to_uint8(hsv), mode="HSV").convert("RGB"))
    if rng.integers(2):
        hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.int32)
        delta = int(rng.integers(-18, 18)) * 256 / 180  # OpenCV hue has 180 steps, Pillow 256
        hsv[..., 0] = np.mod(hsv[..., 0] + int(round(delta)), 256)
        image = np.asarray(Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB"))
    if not contrast_first:
        image = contrast(image)
    return image.astype(np.float32)


def augment_sample(sample: dict[str, np.ndarray], settings: AugmentSettings, ignore_index: int,
                   rng: np.random.Generator, image_keys: Sequence[str]) -> dict:
    """Random geometry (identical for every image modality and the label), then photometric."""
    sample = dict(sample)
    label = sample["label"]
    images = {k: sample[k].astype(np.float32, copy=False) for k in image_keys}

    def resize_all(size):
        nonlocal label
        for key in images:
            images[key] = resize_image(images[key], size)
        label = resize_label(label, size)

    if settings.resize is not None:
        resize_all(settings.resize)
    ratio = None
    if settings.scale is not None:
        ratio = float(rng.uniform(*settings.scale))
    elif settings.scale_choices is not None:
        ratio = float(settings.scale_choices[int(rng.integers(len(settings.scale_choices)))])
    if ratio is not None:
        height, width = label.shape
        if settings.base_size is not None:
            target = (int(settings.base_size[0] * ratio), int(settings.base_size[1] * ratio))
            size = keep_ratio_size(height, width, target)
        else:
            size = (max(1, int(height * ratio)), max(1, int(width * ratio)))
        resize_all(size)
    if settings.crop is not None:
        top, left = _random_crop_box(label, settings.crop, settings, ignore_index, rng)
        bottom, right = top + settings.crop[0], left + settings.crop[1]
        label = label[top:bottom, left:right]
        images = {k: v[top:bottom, left:right] for k, v in images.items()}
    if "h" in settings.flip and rng.random() < 0.5:
        label = label[:, ::-1]
        images = {k: v[:, ::-1] for k, v in images.items()}
    if "v" in settings.flip and rng.random() < 0.5:
        label = label[::-1]
        images = {k: v[::-1] for k, v in images.items()}
    if settings.photometric and "rgb" in images:
        images["rgb"] = photometric_distortion(images["rgb"], rng)
    sample.update(images)
    sample["label"] = np.ascontiguousarray(label)
    return sample


# --------------------------------------------------------------------------------- normalisation

def normalise(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, C) raw -> (C, H, W) float32 tensor of (array - mean) / std per channel."""
    array = np.asarray(array, dtype=np.float32)
    channels = array.shape[2]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float32), (channels,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float32), (channels,))
    out = (array - mean) / std
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def pad_bottom_right(tensor: torch.Tensor, size: tuple[int, int], value: float) -> torch.Tensor:
    pad_h, pad_w = size[0] - tensor.shape[-2], size[1] - tensor.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return tensor
    return F.pad(tensor, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=value)


def finish_sample(sample: dict[str, np.ndarray], norm: dict[str, tuple], name: str,
                  augment: AugmentSettings | None, ignore_index: int,
                  rng: np.random.Generator | None) -> dict:
    """Raw decoded sample -> the item contract: normalised float32 (C, H, W), int64 label."""
    image_keys = [k for k in norm if k in sample]
    if augment is not None:
        sample = augment_sample(sample, augment, ignore_index, rng, image_keys)
    item = {key: normalise(sample[key], *norm[key]) for key in image_keys}
    item["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.int64))
    if augment is not None and augment.crop is not None:
        for key in image_keys:
            item[key] = pad_bottom_right(item[key], augment.crop, 0.0)
        item["label"] = pad_bottom_right(item["label"], augment.crop, ignore_index)
    for key, value in sample.items():
        if key not in item and key != "label":
            item[key] = value
    item["name"] = name
    return item
