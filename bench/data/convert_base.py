"""What every converter shares (bench/data/convert.py, convert_isprs.py): the registry, the
summary a converter returns, and RAW_DIR with its .zip files extracted."""
from __future__ import annotations

import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.data.io import DataError


@dataclass
class ConvertSummary:
    dataset: str
    out_dir: Path
    written: dict[str, int] = field(default_factory=dict)  # split -> samples
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        counts = ", ".join(f"{split} {count}" for split, count in self.written.items())
        lines = [f"converted {self.dataset} into {self.out_dir}: {counts or 'nothing'}"]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


_CONVERTERS: dict[str, Callable[..., ConvertSummary]] = {}


def register_converter(name: str):
    def wrap(fn):
        _CONVERTERS[name] = fn
        return fn
    return wrap


@contextmanager
def search_roots(raw_dir: Path):
    """RAW_DIR, plus a temporary folder holding the contents of its .zip files."""
    zips = sorted(raw_dir.rglob("*.zip"))
    if not zips:
        yield [raw_dir]
        return
    with tempfile.TemporaryDirectory(prefix="ssmbench-convert-") as tmp:
        for index, archive in enumerate(zips):
            try:
                with zipfile.ZipFile(archive) as handle:
                    handle.extractall(Path(tmp) / str(index))
            except zipfile.BadZipFile:
                raise DataError("not a readable zip archive", archive,
                                kind="corrupt file") from None
        yield [raw_dir, Path(tmp)]
