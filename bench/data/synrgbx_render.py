"""SynRGBX scene sampling and rendering (numpy only); the design is in docs/datasets.md.

Each modality carries an orthogonal latent attribute: RGB shows the hue family A of every object
and nothing about its level P; X shows P (height, heat or backscatter contrast) and nothing about
hue. The label needs both, and classes 7/8 need their interaction (an XOR of A and P).

Randomness is split into five independent streams per scene, each a child of
``SeedSequence([seed, split, index])``:

    geometry   item count, shapes, positions and painter's order (seen by both modalities)
    hue        the family A of every object and decal              -> RGB and the label only
    level      the level P and contrast of every object and bump   -> X and the label only
    rgb        RGB appearance and sensor noise                     -> RGB only
    x          X appearance and sensor noise                       -> X only

``render_rgb`` reads only (geometry, hue, rgb) and ``render_x`` only (geometry, level, x), so
re-drawing the other modality's latent leaves a modality byte-identical (the no-leak test).
Sizes are given for 64 px and scale with ``size / 64``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

FAMILIES = ("red", "green", "blue", "yellow", "cyan")
HUE_CENTRE_DEG = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0}
CLASSES = ["background", "red_low", "red_high", "green_low", "green_high", "blue_low",
           "blue_high", "yellow_low|cyan_high", "yellow_high|cyan_low"]
PALETTE = [(0, 0, 0), (128, 0, 0), (255, 64, 64), (0, 128, 0), (64, 255, 64), (0, 0, 128),
           (64, 64, 255), (128, 128, 0), (0, 128, 128)]
XOR_PAIR = (7, 8)
FLAVOURS = ("depth", "thermal", "sar", "dsm")
STREAMS = ("geometry", "hue", "level", "rgb", "x")
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}

LOW, HIGH = 0, 1
#: height contrast dz of an object, by level (metres; the ground field spans +-0.5)
DZ_RANGE = {LOW: (0.15, 0.3), HIGH: (0.5, 0.8)}
#: thermal contrast (kelvin) by level; the ambient field spans +-3 K
DT_RANGE = {LOW: (2.0, 4.0), HIGH: (6.0, 10.0)}
#: SAR backscatter contrast (dB) by level; the ground is -15 dB +- 3 dB
SAR_DB = {LOW: 4.0, HIGH: 10.0}


def class_of(family: int, level: int) -> int:
    """1-6 = {red, green, blue} x {low, high}; 7 = yellow-low or cyan-high, 8 = yellow-high or
    cyan-low (the XOR pair: neither A nor P alone says which)."""
    if family < 3:
        return 1 + 2 * family + level
    return 7 + (level ^ (family == 4))


# ----------------------------------------------------------------------------------- latents

@dataclass
class Item:
    """One shape in painter's order. ``kind``: object (class-bearing), decal (object-like colour,
    flat: background) or bump (height contrast, ground-looking: background)."""
    kind: str
    shape: str
    centre: tuple[float, float]  # (y, x) pixels
    dims: tuple[float, ...]  # ellipse (ry, rx); rectangle (h, w); triangle (r, jitter...)
    angle: float


@dataclass
class Scene:
    size: int
    items: list[Item]
    #: per item: family index (objects, decals) or -1
    family: np.ndarray
    #: per item: level (objects, bumps) or -1, and contrast fraction in [0, 1]
    level: np.ndarray
    contrast: np.ndarray
    streams: dict[str, np.random.SeedSequence]


def scene_streams(seed: int, split: str, index: int) -> dict[str, np.random.SeedSequence]:
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, SPLIT_CODES[split], int(index)])
    return dict(zip(STREAMS, root.spawn(len(STREAMS))))


def sample_scene(size: int, streams: dict[str, np.random.SeedSequence]) -> Scene:
    scale = size / 64.0
    geo = np.random.default_rng(streams["geometry"])
    kinds = (["object"] * int(geo.integers(6, 11)) + ["decal"] * int(geo.integers(1, 3))
             + ["bump"] * int(geo.integers(1, 3)))
    geo.shuffle(kinds)  # painter's order: later items occlude earlier ones
    items = []
    for kind in kinds:
        shape = ("ellipse", "rectangle", "triangle")[int(geo.integers(3))]
        centre = (float(geo.uniform(0, size)), float(geo.uniform(0, size)))
        angle = float(geo.uniform(0, math.pi))
        if shape == "ellipse":
            dims = tuple(float(v) * scale for v in geo.uniform(5, 13, 2))
        elif shape == "rectangle":
            dims = tuple(float(v) * scale for v in geo.uniform(8, 24, 2))
        else:  # radius and the jitter of the three vertex angles
            dims = (float(geo.uniform(7, 15)) * scale, *map(float, geo.uniform(-0.35, 0.35, 3)))
        items.append(Item(kind, shape, centre, dims, angle))
    hue = np.random.default_rng(streams["hue"])
    lvl = np.random.default_rng(streams["level"])
    n = len(items)
    family = np.full(n, -1, np.int64)
    level = np.full(n, -1, np.int64)
    contrast = np.zeros(n)
    for k, item in enumerate(items):
        if item.kind in ("object", "decal"):
            family[k] = hue.integers(len(FAMILIES))
        if item.kind in ("object", "bump"):
            level[k] = lvl.integers(2)
            contrast[k] = lvl.uniform()
    return Scene(size, items, family, level, contrast, streams)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def item_extent(item: Item) -> float:
    """Radius of a disc around the centre that holds the whole shape."""
    if item.shape == "ellipse":
        return max(item.dims)
    if item.shape == "rectangle":
        return 0.5 * math.hypot(*item.dims)
    return item.dims[0]


def item_mask(item: Item, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    dy, dx = yy - item.centre[0], xx - item.centre[1]
    cos, sin = math.cos(item.angle), math.sin(item.angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if item.shape == "ellipse":
        ry, rx = item.dims
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    if item.shape == "rectangle":
        h, w = item.dims
        return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    radius, *jitter = item.dims
    angles = [item.angle + 2 * math.pi * k / 3 + j for k, j in enumerate(jitter)]
    pts = [(item.centre[0] + radius * math.sin(a), item.centre[1] + radius * math.cos(a))
           for a in angles]
    signs = []
    for (y0, x0), (y1, x1) in zip(pts, pts[1:] + pts[:1]):
        signs.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0)
    return (signs[0] & signs[1] & signs[2]) | (~signs[0] & ~signs[1] & ~signs[2])


def top_item(scene: Scene) -> np.ndarray:
    """(H, W) index of the visible item at every pixel, -1 for ground."""
    size = scene.size
    coords = np.arange(size, dtype=np.float64) + 0.5
    top = np.full((size, size), -1, np.int64)
    for k, item in enumerate(scene.items):
        reach = item_extent(item) + 1
        y0, y1 = max(0, int(item.centre[0] - reach)), min(size, int(item.centre[0] + reach) + 1)
        x0, x1 = max(0, int(item.centre[1] - reach)), min(size, int(item.centre[1] + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.meshgrid(coords[y0:y1], coords[x0:x1], indexing="ij")
        window = top[y0:y1, x0:x1]
        window[item_mask(item, yy, xx)] = k
    return top


def render_label(scene: Scene, top: np.ndarray, boundary: bool = False) -> np.ndarray:
    """uint8 class map; decals and bumps are background. ``boundary`` sets the 1-px inner
    boundary of every class region to 255 (ISPRS-style eroded borders)."""
    lut = np.zeros(len(scene.items) + 1, np.uint8)  # index -1 (ground) -> last entry = 0
    for k, item in enumerate(scene.items):
        if item.kind == "object":
            lut[k] = class_of(int(scene.family[k]), int(scene.level[k]))
    label = lut[top]
    if boundary:
        edge = np.zeros_like(label, dtype=bool)
        edge[:-1] |= top[:-1] != top[1:]
        edge[1:] |= top[1:] != top[:-1]
        edge[:, :-1] |= top[:, :-1] != top[:, 1:]
        edge[:, 1:] |= top[:, 1:] != top[:, :-1]
        label[edge] = 255
    return label


# ------------------------------------------------------------------------------ fields, utils

def smooth_field(rng: np.random.Generator, size: int, octaves=(2, 4, 8, 16),
                 persistence: float = 0.5) -> np.ndarray:
    """Fractal noise in [-1, 1]: bicubic-upsampled random grids, amplitude x persistence per
    octave."""
    out = np.zeros((size, size), np.float64)
    amplitude = 1.0
    for cells in octaves:
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        up = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
        out += amplitude * np.asarray(up, np.float64)
        amplitude *= persistence
    return out / max(1e-9, np.abs(out).max())


def blob_mask(rng: np.random.Generator, size: int, fraction: float) -> np.ndarray:
    """Smooth blobs covering ``fraction`` of the image (a quantile threshold of a smooth field)."""
    if fraction <= 0:
        return np.zeros((size, size), bool)
    field = smooth_field(rng, size, octaves=(2, 4, 8))
    return field > np.quantile(field, 1.0 - fraction)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, radius, mode="reflect")
    rows = sum(w * padded[i:i + image.shape[0], :] for i, w in enumerate(taps))
    return sum(w * rows[:, i:i + image.shape[1]] for i, w in enumerate(taps))


def resize_float(image: np.ndarray, size: int) -> np.ndarray:
    up = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(up, np.float64)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """h in degrees, s and v in [0, 1] -> (..., 3) RGB in [0, 1]."""
    h6 = (np.mod(h, 360.0) / 60.0)
    c = v * s
    x = c * (1 - np.abs(np.mod(h6, 2) - 1))
    zero = np.zeros_like(c)
    sector = np.floor(h6).astype(np.int64) % 6
    r = np.choose(sector, [c, x, zero, zero, x, c])
    g = np.choose(sector, [x, c, c, x, zero, zero])
    b = np.choose(sector, [zero, zero, x, c, c, x])
    m = v - c
    return np.stack([r + m, g + m, b + m], axis=-1)


def minmax_uint8(values: np.ndarray, valid: np.ndarray, low: int = 0) -> np.ndarray:
    """Per-image min-max to [low, 255] over ``valid`` pixels; invalid pixels are 0."""
    out = np.zeros(values.shape, np.uint8)
    if valid.any():
        lo, hi = values[valid].min(), values[valid].max()
        scaled = (values - lo) / max(hi - lo, 1e-9)
        out[valid] = np.clip(np.rint(low + (255 - low) * scaled[valid]), low, 255).astype(np.uint8)
    return out


def to_uint8(image01: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image01 * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- RGB

def _texture(rng: np.random.Generator, scale: float):
    """A class-unrelated nuisance pattern multiplying V: plain, stripes (period 3-6) or dots.
    Draws its parameters now and returns ``f(yy, xx) -> factor``."""
    kind = int(rng.integers(3))
    if kind == 0:
        return lambda yy, xx: np.ones_like(yy)
    if kind == 1:
        period = rng.uniform(3, 6) * scale
        theta = rng.uniform(0, math.pi)
        return lambda yy, xx: 1.0 + 0.18 * np.sign(
            np.sin(2 * math.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period))
    period = rng.uniform(4, 7) * scale
    oy, ox = rng.uniform(0, period, 2)

    def dots(yy, xx):
        dist = np.hypot(np.mod(yy + oy, period) - period / 2,
                        np.mod(xx + ox, period) - period / 2)
        return np.where(dist < 0.3 * period, 0.75, 1.0)

    return dots


def render_rgb(scene: Scene, top: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from geometry, hue families and the RGB nuisance stream only."""
    size, scale = scene.size, scene.size / 64.0
    rng = np.random.default_rng(scene.streams["rgb"])
    yy, xx = _grid(size)
    hue = np.full((size, size), rng.uniform(0, 360))
    sat = np.full((size, size), rng.uniform(0.03, 0.2))
    val = rng.uniform(0.35, 0.6) * (1.0 + 0.08 * smooth_field(rng, size))
    for k, item in enumerate(scene.items):
        # every item draws its appearance, visible or not, so the stream does not depend on P
        centre = HUE_CENTRE_DEG[FAMILIES[scene.family[k]]] if scene.family[k] >= 0 else None
        h = rng.uniform(-12, 12)
        s, v = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.9)
        texture = _texture(rng, scale)
        if item.kind == "bump" or centre is None:
            continue  # bumps look like ground
        where = top == k
        hue[where] = centre + h
        sat[where] = s
        val[where] = np.clip(v * texture(yy[where], xx[where]), 0, 1)
    rgb = hsv_to_rgb(hue, sat, np.clip(val, 0, 1))
    rgb *= np.exp(0.3 * smooth_field(rng, size, octaves=(1, 2)))[..., None]  # illumination
    gain, contrast = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    mean = rgb.mean()
    rgb = (rgb - mean) * contrast + mean * gain
    rgb += rng.normal(0.0, rng.uniform(0.02, 0.04), rgb.shape)
    return to_uint8(rgb)


# ------------------------------------------------------------------------------------------ X

def item_contrast(scene: Scene, top: np.ndarray, ranges: dict[int, tuple[float, float]]):
    """Per-pixel contrast of the visible item (objects and bumps by level, decals 0)."""
    lut = np.zeros(len(scene.items) + 1)
    for k in range(len(scene.items)):
        if scene.level[k] >= 0:
            lo, hi = ranges[int(scene.level[k])]
            lut[k] = lo + (hi - lo) * scene.contrast[k]
    return lut[top]


def depth_edges(top: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """1-px boundaries where the height jumps (flying pixels of a depth sensor)."""
    jump = np.zeros(top.shape, bool)
    for axis in (0, 1):
        diff = np.abs(np.diff(dz, axis=axis)) > 1e-6
        if axis == 0:
            jump[1:] |= diff
        else:
            jump[:, 1:] |= diff
    return jump


def render_x(scene: Scene, top: np.ndarray, flavour: str, ndsm: bool = False) -> np.ndarray:
    """(H, W) uint8 from geometry, levels and the X nuisance stream only."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown SynRGBX flavour {flavour!r} (known: {', '.join(FLAVOURS)})")
    size = scene.size
    rng = np.random.default_rng(scene.streams["x"])
    # The ground field spans +-0.5 and dz is 0.15-0.3 (low) or 0.5-0.8 (high): absolute Z
    # overlaps between the levels, only the local contrast separates them.
    ground = 0.5 * smooth_field(rng, size)
    dz = item_contrast(scene, top, DZ_RANGE)
    if flavour == "depth":
        rows = (np.arange(size) + 0.5)[:, None] / size
        depth = 2.0 + 6.0 * (1.0 - rows) - (ground + dz)
        depth = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0028 * depth ** 2
        holes = blob_mask(rng, size, rng.uniform(0.0, 0.15))
        holes |= rng.random(depth.shape) < 0.02
        holes |= depth_edges(top, dz)
        return minmax_uint8(depth, ~holes, low=1)
    if flavour == "thermal":
        ambient = 3.0 * smooth_field(rng, size)
        temp = ambient + item_contrast(scene, top, DT_RANGE)
        half = temp.reshape(size // 2, 2, size // 2, 2).mean(axis=(1, 3))  # 1/2-res sensor
        temp = resize_float(gaussian_blur(half, 1.0), size)
        dead = rng.random(temp.shape) < 0.01
        image = minmax_uint8(temp, np.ones_like(dead), low=0).astype(np.float64)
        image += rng.normal(0.0, 1.5, (1, size))  # column fixed-pattern noise, 1.5 DN
        image = np.clip(np.rint(image), 0, 255)
        image[dead] = 0
        return image.astype(np.uint8)
    if flavour == "sar":
        db = -15.0 + 3.0 * smooth_field(rng, size)
        gain = item_contrast(scene, top, {LOW: (SAR_DB[LOW],) * 2, HIGH: (SAR_DB[HIGH],) * 2})
        # layover: the return of an elevated pixel lands round(6 dz) px towards the sensor (-x)
        shift = np.rint(6.0 * dz * size / 64.0).astype(np.int64)
        ys, xs = np.nonzero(gain > 0)
        target = xs - shift[ys, xs]
        keep = target >= 0
        layover = np.zeros_like(db)
        np.maximum.at(layover, (ys[keep], target[keep]), gain[ys[keep], xs[keep]])
        looks = int(rng.choice([1, 2, 4]))
        power = 10.0 ** ((db + layover) / 10.0) * rng.gamma(looks, 1.0 / looks, db.shape)
        db = np.clip(10.0 * np.log10(np.maximum(power, 1e-12)), -25.0, 5.0)
        return to_uint8((db + 25.0) / 30.0)
    height = dz if ndsm else ground + dz
    height = height + rng.normal(0.0, 0.01, height.shape)
    return minmax_uint8(height, np.ones(height.shape, bool))


def render_scene(seed: int, split: str, index: int, size: int = 64, flavour: str = "depth",
                 boundary: bool = False, ndsm: bool = False,
                 streams: dict[str, np.random.SeedSequence] | None = None):
    """(rgb (H, W, 3) uint8, x (H, W) uint8, label (H, W) uint8) of one scene."""
    if size % 2:
        raise ValueError(f"SynRGBX size must be even, got {size}")
    scene = sample_scene(size, streams or scene_streams(seed, split, index))
    top = top_item(scene)
    return (render_rgb(scene, top), render_x(scene, top, flavour, ndsm),
            render_label(scene, top, boundary))
