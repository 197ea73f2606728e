"""``ssmbench data convert NAME RAW_DIR OUT_DIR``: raw downloads -> the layouts the papers train on.

Converters (``list_converters()``; options are ``--option key=value`` on the command line):

- ``mfnet``: the native RGBA layout -> Sigma/CMX ``RGB/ Modal/ Label/`` (RGBA channels 0:3 and
  3), ``train2.txt`` = train + val and ``test.txt`` (Sigma), plus the original split files.
- ``pst900``: the native ``{train,test}/{rgb,thermal,labels}`` -> Sigma's ``rgb_resize/
  thermal_resize/ labels_resize/`` with ``train.txt`` / ``test.txt`` (thermal as one channel).
- ``whu_opt_sar``: the 100 tiles -> 256² crops (SOLC's grid, ``<tile>_<k>``), written as
  Mamba-Diffusion's ``cat/ label/`` (``layout=mmseg``, 5-band tif, labels / 10) or SOLC's
  ``<split>/{opt,sar,lbl}`` (``layout=solc``, labels kept x 10). ``split=random622`` (default:
  SOLC's random 6:2:2 over crops, ``seed=0``) or ``official`` (the division file's train / test
  tiles).
- ``loveda``: ``{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}`` -> mmseg's
  ``img_dir/ ann_dir/`` (mmseg ``loveda.py``; copies, the download is left as it is).
- ``vaihingen``, ``potsdam``: see ``bench/data/convert_isprs.py``.

Every converter reads extracted folders anywhere below RAW_DIR, and ``.zip`` files there are
extracted to a temporary folder first. Outputs are written over existing files of the same name.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import bench.data.convert_isprs  # noqa: F401  (registers vaihingen, potsdam)
from bench.data.convert_base import _CONVERTERS, ConvertSummary, register_converter, search_roots
from bench.data.io import (
    DataError,
    MissingPathError,
    as_grayscale,
    list_stems,
    read_channels,
    read_image,
    read_split_file,
    write_png,
    write_tiff,
)


def list_converters() -> list[str]:
    return sorted(_CONVERTERS)


def convert_dataset(name: str, raw_dir, out_dir, **options) -> ConvertSummary:
    known = list_converters()
    if name not in known:
        raise DataError(f"no converter for {name!r} (converters: {', '.join(known)}); the other "
                        "datasets are read as released")
    raw_dir, out_dir = Path(raw_dir).expanduser(), Path(out_dir).expanduser()
    if not raw_dir.is_dir():
        raise MissingPathError("raw download folder not found", raw_dir, kind="missing root")
    try:
        return _CONVERTERS[name](raw_dir, out_dir, **options)
    except TypeError as error:
        if "unexpected keyword" in str(error):
            raise DataError(f"{name} converter: {error}") from None
        raise


def find_dir(roots: list[Path], name: str, containing: str | None = None) -> Path | None:
    """The first folder called ``name`` below ``roots`` (that has ``containing`` inside)."""
    for root in roots:
        candidates = [root] if root.name == name else []
        candidates += sorted(p for p in root.rglob(name) if p.is_dir())
        for candidate in candidates:
            if containing is None or (candidate / containing).exists():
                return candidate
    return None


# ------------------------------------------------------------------------------------- MFNet

@register_converter("mfnet")
def convert_mfnet(raw_dir: Path, out_dir: Path) -> ConvertSummary:
    summary = ConvertSummary("mfnet", out_dir)
    with search_roots(raw_dir) as roots:
        images = find_dir(roots, "images")
        if images is None:
            raise MissingPathError("MFNet images/ folder (RGBA PNGs) not found", raw_dir)
        base = images.parent
        for stem in list_stems(images, (".png",)):
            rgba = read_channels(images / f"{stem}.png", 4,
                                 "an RGBA PNG (RGB + thermal in channel 3)")
            write_png(out_dir / "RGB" / f"{stem}.png", np.ascontiguousarray(rgba[..., :3]))
            write_png(out_dir / "Modal" / f"{stem}.png", np.ascontiguousarray(rgba[..., 3]))
            label_path = base / "labels" / f"{stem}.png"
            if label_path.is_file():
                shutil.copyfile(label_path, _target(out_dir / "Label" / f"{stem}.png"))
        splits = {p.stem: read_split_file(p) for p in sorted(base.glob("*.txt"))}
    for split, stems in splits.items():
        (out_dir / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        summary.written[split] = len(stems)
    if "train" in splits:
        train2 = splits["train"] + splits.get("val", [])
        (out_dir / "train2.txt").write_text("".join(f"{s}\n" for s in train2))
        summary.written["train2 (train + val)"] = len(train2)
    return summary


# ------------------------------------------------------------------------------------ PST900

@register_converter("pst900")
def convert_pst900(raw_dir: Path, out_dir: Path) -> ConvertSummary:
    summary = ConvertSummary("pst900", out_dir)
    with search_roots(raw_dir) as roots:
        base = None
        for root in roots:
            found = sorted(p.parent.parent for p in root.rglob("rgb") if p.is_dir()
                           and (p.parent / "thermal").is_dir())
            if found:
                base = found[0]
                break
        if base is None:
            raise MissingPathError("PST900 <split>/rgb and <split>/thermal folders not found",
                                   raw_dir)
        seen = set()
        for split_dir in sorted(p for p in base.iterdir() if (p / "rgb").is_dir()):
            stems = list_stems(split_dir / "rgb", (".png",))
            if seen & set(stems):
                repeated = sorted(seen & set(stems))[:3]
                raise DataError(f"sample names repeat across splits: {repeated}"
                                "; Sigma's flat layout needs unique names", split_dir)
            seen |= set(stems)
            for stem in stems:
                shutil.copyfile(split_dir / "rgb" / f"{stem}.png",
                                _target(out_dir / "rgb_resize" / f"{stem}.png"))
                thermal_path = split_dir / "thermal" / f"{stem}.png"
                write_png(out_dir / "thermal_resize" / f"{stem}.png",
                          as_grayscale(read_image(thermal_path), thermal_path))
                shutil.copyfile(split_dir / "labels" / f"{stem}.png",
                                _target(out_dir / "labels_resize" / f"{stem}.png"))
            (out_dir / f"{split_dir.name}.txt").write_text("".join(f"{s}\n" for s in stems))
            summary.written[split_dir.name] = len(stems)
    return summary


def _target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------ LoveDA

@register_converter("loveda")
def convert_loveda(raw_dir: Path, out_dir: Path) -> ConvertSummary:
    summary = ConvertSummary("loveda", out_dir)
    with search_roots(raw_dir) as roots:
        for folder, split in (("Train", "train"), ("Val", "val"), ("Test", "test")):
            base = find_dir(roots, folder, containing="Urban") or find_dir(roots, folder,
                                                                           containing="Rural")
            if base is None:
                summary.notes.append(f"{folder}/ not found; {split} skipped")
                continue
            count = 0
            for scene in ("Rural", "Urban"):
                for kind, target in (("images_png", "img_dir"), ("masks_png", "ann_dir")):
                    source = base / scene / kind
                    for stem in list_stems(source, (".png",)):
                        shutil.copyfile(source / f"{stem}.png",
                                        _target(out_dir / target / split / f"{stem}.png"))
                        count += kind == "images_png"
            summary.written[split] = count
    return summary


# ------------------------------------------------------------------------------- WHU-OPT-SAR

@register_converter("whu_opt_sar")
def convert_whu_opt_sar(raw_dir: Path, out_dir: Path, layout: str = "mmseg",
                        split: str = "random622", seed: int = 0) -> ConvertSummary:
    from bench.data.whu_opt_sar import (
        CROP,
        _tile_folder,
        divide_by_ten,
        find_division_file,
        parse_division_file,
    )
    if layout not in ("mmseg", "solc"):
        raise DataError(f"whu_opt_sar converter layout must be mmseg or solc, got {layout!r}")
    if split not in ("random622", "official"):
        raise DataError(f"whu_opt_sar converter split must be random622 or official, got {split!r}")
    summary = ConvertSummary("whu_opt_sar", out_dir)
    with search_roots(raw_dir) as roots:
        base = next((r for root in roots for r in [root, *root.rglob("*")]
                     if r.is_dir() and _tile_folder(r, "rgb") is not None), None)
        if base is None:
            raise MissingPathError("WHU-OPT-SAR optical/ sar/ lbl/ tile folders not found", raw_dir)
        folders = {role: _tile_folder(base, role) for role in ("rgb", "x", "label")}
        division = find_division_file(base)
        tile_splits = parse_division_file(division) if division else {}
        tiles = sorted({s for stems in tile_splits.values() for s in stems}) or \
            list_stems(folders["rgb"], (".tif",))
        crops = []  # (name, tile, row, col)
        for tile in tiles:
            label_path = folders["label"] / f"{tile}.tif"
            height, width = read_image(label_path).shape[:2]
            cols = width // CROP
            crops += [(f"{tile}_{r * cols + c}", tile, r, c)
                      for r in range(height // CROP) for c in range(cols)]
        if split == "official":
            if not tile_splits:
                raise MissingPathError("split=official needs 'The division of the dataset.txt'",
                                       base / "The division of the dataset.txt")
            tile_split = {t: s for s, stems in tile_splits.items() for t in stems}
            assignment = {name: tile_split[tile] for name, tile, _, _ in crops}
        else:  # SOLC: random 6:2:2 over all crops
            order = np.random.default_rng(seed).permutation(len(crops))
            n_train, n_val = int(0.6 * len(crops)), int(0.2 * len(crops))
            assignment = {}
            for rank, index in enumerate(order):
                assignment[crops[index][0]] = ("train" if rank < n_train else
                                               "val" if rank < n_train + n_val else "test")
        current_tile, arrays = None, {}
        for name, tile, row, col in crops:
            if tile != current_tile:
                arrays = {role: read_image(folder / f"{tile}.tif")
                          for role, folder in folders.items()}
                current_tile = tile
            box = (slice(row * CROP, (row + 1) * CROP), slice(col * CROP, (col + 1) * CROP))
            optical, sar, label = (arrays[r][box] for r in ("rgb", "x", "label"))
            target = assignment[name]
            if layout == "mmseg":
                try:
                    classes = divide_by_ten(label).astype(np.uint8)
                except DataError as error:
                    raise DataError(error.message, folders["label"] / f"{tile}.tif",
                                    kind=error.kind) from None
                cat = np.concatenate([optical, sar[..., None] if sar.ndim == 2 else sar], axis=2)
                write_tiff(out_dir / "cat" / target / f"{name}.tif", cat)
                write_tiff(out_dir / "label" / target / f"{name}.tif", classes)
            else:
                write_tiff(out_dir / target / "opt" / f"{name}.tif", optical)
                write_tiff(out_dir / target / "sar" / f"{name}.tif", sar)
                write_tiff(out_dir / target / "lbl" / f"{name}.tif", label)
            summary.written[target] = summary.written.get(target, 0) + 1
    return summary
