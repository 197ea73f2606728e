"""Reading and writing the native files of the real datasets, and the ``DataError`` family.

Every error raised for bad or missing data is a ``DataError`` that names the path and says what
is wrong; it is a ``UserError`` that ``ssmbench`` (bench/cli.py) prints without a traceback,
exiting with code 2, and ``bench/data/checks.py`` collects them per file. ``kind`` is a short
category used by the check report ("missing file", "corrupt file", "wrong channel count", ...).

Images are decoded with Pillow (PNG, JPEG) and tifffile (GeoTIFF) into numpy arrays in their
native dtype: (H, W) for single-band files, (H, W, C) otherwise. No OpenCV: where the papers' code
relies on an OpenCV decoding flag, the function that reproduces it says so.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageFile

from models.errors import UserError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES


class DataError(UserError):
    """Bad or missing data. ``str()`` is the message the user sees: path first, then the problem."""

    kind = "bad data"

    def __init__(self, message: str, path: str | Path | None = None, kind: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class MissingPathError(DataError):
    kind = "missing file"


class CorruptFileError(DataError):
    kind = "corrupt file"


class DataFormatError(DataError):
    kind = "bad format"


class LabelRangeError(DataError):
    kind = "label out of range"


class SplitError(DataError):
    kind = "bad split"


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        raise MissingPathError(f"{what} not found{'; ' + hint if hint else ''}", path)
    return path


# --------------------------------------------------------------------------------------- reading

def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file to (H, W) or (H, W, C) in its native dtype.

    PNG palette images give their indices (label files are often palette PNGs); 16-bit PNGs give
    uint16; RGBA stays 4 channels. TIFFs are returned channels-last whatever their planar config.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError("file not found", path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    _configure_pillow()
    try:
        with Image.open(path) as image:
            image.load()
            array = _pillow_to_array(image)
    except (OSError, SyntaxError, ValueError, zlib.error, EOFError) as error:
        raise CorruptFileError(f"cannot decode image ({error}); the file is truncated or not an "
                               "image", path) from None
    return array


def _configure_pillow() -> None:
    """Pillow's two process-wide settings that dataset files need, set when one is read (not
    when this module is imported)."""
    # Truncated files must fail, not decode as grey padding.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Remote-sensing tiles (ISPRS Potsdam 6000², WHU 5556×3704) exceed Pillow's bomb guard.
    Image.MAX_IMAGE_PIXELS = None


def _pillow_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("1",):
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        array = np.asarray(image)
        if array.size and array.min() >= 0 and array.max() <= 65535:
            return array.astype(np.uint16)
        return array
    if mode in ("L", "P", "RGB", "RGBA", "LA", "F"):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            array = series.asarray()
    except Exception as error:  # tifffile raises many types on truncated or foreign files
        raise CorruptFileError(f"cannot decode TIFF ({type(error).__name__}: {error})",
                               path) from None
    # Planar-separate multi-band GeoTIFFs come back band-first ("SYX", "CYX", "QYX", "IYX").
    if array.ndim == 3 and axes[-2:] == "YX" and axes[0] != "Y":
        array = np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(array)


def channels_last(array: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged."""
    return array[..., None] if array.ndim == 2 else array


def as_grayscale(array: np.ndarray, path: Path | None = None) -> np.ndarray:
    """One channel, the way the papers' ``cv2.imread(p, IMREAD_GRAYSCALE)`` reads it.

    Replicated-grey RGB(A) files (PST900 thermal, DFormer's ``plt.imsave`` depth PNGs) give their
    first channel exactly; truly coloured files get OpenCV's luma 0.299 R + 0.587 G + 0.114 B.
    """
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise DataFormatError(f"expected an image, got an array of shape {array.shape}", path)
    if array.shape[2] in (1, 2):  # grey or grey + alpha
        return array[..., 0]
    colour = array[..., :3]
    if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0],
                                                                           colour[..., 2]):
        return colour[..., 0]
    luma = colour[..., 0] * 0.299 + colour[..., 1] * 0.587 + colour[..., 2] * 0.114
    return np.clip(np.rint(luma), 0, np.iinfo(array.dtype).max if array.dtype.kind in "ui"
                   else None).astype(array.dtype)


def read_channels(path: Path, channels: int, what: str) -> np.ndarray:
    """Read an (H, W, ``channels``) image; another channel count is a clear error."""
    image = read_image(path)
    found = 1 if image.ndim == 2 else image.shape[2]
    if found != channels:
        raise DataFormatError(f"expected {what}, got {found} channel(s)", path,
                              kind="wrong channel count")
    return image


def read_label_image(path: Path) -> np.ndarray:
    """A single-band index image (uint8/uint16); a colour image here is a format error."""
    label = read_image(path)
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise DataFormatError(
            f"label has {label.shape[2]} channels; expected a single-channel index image "
            "(is this a colour visualisation? convert it with `ssmbench data convert`)",
            path, kind="wrong channel count")
    if label.dtype.kind not in "ui":
        raise DataFormatError(f"label dtype {label.dtype} is not an integer type", path,
                              kind="bad label encoding")
    return label


def read_split_file(path: Path) -> list[str]:
    """Sample stems listed in a split file, one per line.

    Accepts the bare-stem syntax (Sigma/CMX ``train2.txt``: ``00001D``) and DFormer's
    ``RGB/2.jpg Label/2.png`` lines (the first token's file stem, as DFormer's
    ``item.split('/')[1].split('.jpg')[0]``). Blank lines and ``#`` comments are skipped.
    """
    require_file(path, "split file")
    stems = []
    for number, line in enumerate(read_text_file(path, "split file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token = line.split()[0]
        if "/" in token or Path(token).suffix.lower() in IMAGE_SUFFIXES:
            token = Path(token).stem
        if not token:
            raise SplitError(f"line {number}: cannot read a sample name from {line!r}", path,
                             kind="bad split line")
        stems.append(token)
    return stems


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file (a BOM is dropped); another encoding is a ``DataFormatError`` naming the
    file, the line and what to do."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DataFormatError(f"{what} is not UTF-8 (line {line}, byte 0x{data[error.start]:02x}); "
                              f"save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`",
                              path, kind="bad encoding") from None


def list_stems(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted stems of the files in ``folder`` with one of ``suffixes`` (case-insensitive)."""
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes)


# --------------------------------------------------------------------------------------- writing

def write_png(path: str | Path, array: np.ndarray, compress_level: int = 6) -> Path:
    """Write uint8 (H, W) / (H, W, 3) / (H, W, 4) or uint16 (H, W) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError("16-bit PNGs must be single-channel")
        # Pillow >= 10.1 maps uint16 to mode "I;16"
        Image.fromarray(array).save(path, compress_level=compress_level)
    elif array.dtype == np.uint8:
        Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1
                        else array).save(path, compress_level=compress_level)
    else:
        raise ValueError(f"PNG needs uint8 or uint16, got {array.dtype}")
    return path


def write_tiff(path: str | Path, array: np.ndarray) -> Path:
    """Write (H, W) or (H, W, C) as an uncompressed, pixel-interleaved TIFF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        tifffile.imwrite(path, array, photometric="rgb")
    elif array.ndim == 3:
        tifffile.imwrite(path, array, photometric="minisblack", planarconfig="contig")
    else:
        tifffile.imwrite(path, array, photometric="minisblack")
    return path


def write_jpeg(path: str | Path, array: np.ndarray, quality: int = 95) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, quality=quality)
    return path
