"""Checks before training: ``ssmbench data check NAME ROOT`` and ``require_ok`` for the runner.

``check_dataset`` opens every requested split of a dataset and decodes every sample the way
training will (``RGBXFolderDataset.load_raw``), collecting instead of stopping at the first
problem: a missing root, split file or modality file, an empty split, a truncated or
undecodable image, a wrong channel count, modality/label sizes that differ, label values
outside the classes and the ignore index, label encodings that do not decode (WHU values that
are not multiples of 10, Hunan codes outside the official table), duplicate sample names.
Each problem names the file. The report also gives a class histogram per split.

``require_ok`` raises ``DataCheckError`` (a ``DataError``) with the formatted report, so a
training run does not start on broken data and the CLI prints it without a traceback.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.io import DataError
from bench.data.registry import get_dataset_class


class DataCheckError(DataError):
    kind = "check failed"


@dataclass
class Problem:
    kind: str
    path: Path | None
    message: str

    @classmethod
    def from_error(cls, error: DataError) -> "Problem":
        return cls(error.kind, error.path, error.message)

    def format(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        return f"[{self.kind}] {where}{self.message}"


@dataclass
class SplitReport:
    split: str
    entries: int = 0
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    histogram: np.ndarray | None = None
    ignored_pixels: int = 0


@dataclass
class CheckReport:
    dataset: str
    root: Path
    layout: str | None = None
    classes: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def all_problems(self) -> list[Problem]:
        return self.problems + [p for s in self.splits for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.all_problems

    def format(self, max_problems: int = 50) -> str:
        layout = f" ({self.layout} layout)" if self.layout else ""
        lines = [f"data check {self.dataset} {self.root}{layout}"]
        lines += [f"  {p.format()}" for p in self.problems]
        for split in self.splits:
            status = "OK" if not split.problems else f"{len(split.problems)} problem(s)"
            partial = f", {split.checked} checked" if split.checked != split.entries else ""
            lines.append(f"  {split.split}: {split.entries} samples{partial}, {status}")
            if split.histogram is not None and split.histogram.sum():
                total = split.histogram.sum() + split.ignored_pixels
                shares = ", ".join(f"{name} {100 * count / total:.1f}%"
                                   for name, count in zip(self.classes, split.histogram))
                lines.append(f"    class histogram: {shares}; ignore "
                             f"{100 * split.ignored_pixels / total:.1f}%")
            for problem in split.problems[:max_problems]:
                lines.append(f"    {problem.format()}")
            if len(split.problems) > max_problems:
                lines.append(f"    ... and {len(split.problems) - max_problems} more")
        count = len(self.all_problems)
        lines.append("OK" if self.ok else
                     f"FAILED: {count} problem(s); fix the data before training")
        return "\n".join(lines)


def check_dataset(name: str, root, splits=None, layout: str = "auto",
                  max_entries: int | None = None, **options) -> CheckReport:
    """Check ``splits`` (default: every split the layout defines) of dataset ``name``."""
    cls = get_dataset_class(name)
    root = Path(root).expanduser()
    report = CheckReport(name, root, classes=list(cls.info.classes))
    if not root.is_dir():
        report.problems.append(Problem("missing root", root, f"{name} root folder not found"))
        return report
    try:
        report.layout = cls.resolve_layout(root, layout)
        if splits is None:
            splits = cls.available_splits(root, report.layout)
            if not splits:
                report.problems.append(Problem("empty split", root, "no splits found"))
    except DataError as error:
        report.problems.append(Problem.from_error(error))
        return report
    for split in splits:
        report.splits.append(_check_split(cls, root, split, report, max_entries, options))
    return report


def _check_split(cls, root, split, report, max_entries, options) -> SplitReport:
    result = SplitReport(split)
    try:
        dataset = cls(root=root, split=split, layout=report.layout, **options)
    except DataError as error:
        result.problems.append(Problem.from_error(error))
        return result
    report.classes = list(dataset.info.classes)
    result.entries = len(dataset.entries)
    duplicates = [n for n, c in Counter(e.name for e in dataset.entries).items() if c > 1]
    for name in duplicates:
        result.problems.append(Problem("duplicate sample", dataset.split_source(split),
                                       f"sample {name!r} is listed more than once"))
    num_classes, ignore = dataset.info.num_classes, dataset.info.ignore_index
    histogram = np.zeros(num_classes, dtype=np.int64)
    for entry in dataset.entries[:max_entries]:
        result.checked += 1
        missing = dataset.missing_files(entry)
        for role, path in missing:
            result.problems.append(Problem("missing file", path,
                                           f"{role} file of sample {entry.name!r} not found"))
        if missing:
            continue
        try:
            label = dataset.load_raw(entry)["label"]
        except DataError as error:
            result.problems.append(Problem.from_error(error))
            continue
        labelled = label != ignore
        histogram += np.bincount(label[labelled].ravel(), minlength=num_classes)[:num_classes]
        result.ignored_pixels += int((~labelled).sum())
    result.histogram = histogram
    return result


def require_ok(name: str, root, splits=None, **options) -> CheckReport:
    """Check, and raise ``DataCheckError`` with the report if anything is wrong."""
    report = check_dataset(name, root, splits, **options)
    if not report.ok:
        raise DataCheckError(report.format())
    return report
