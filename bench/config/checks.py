"""Names in a suite checked against what exists, all problems collected (docs/suites.md,
"Validation and preflight"): ``exclude:`` / ``overrides:`` keys against the grid axes, duplicate
grid entries, ``report.baseline`` against the grid, ``search.space`` keys against the real
settings, ``train.augment`` keys against the transform's options, fusion kinds against the model
and the dataset's modalities (text vs image), and real-dataset roots (missing, a file, an
unrecognised layout).

Each check returns a list of ``SuiteError`` (file, line, key path, what to do);
``bench/config/suite.py`` raises them together. Relative ``root:`` paths are resolved here, once,
against the folder of the file that wrote them (``resolve_roots``), so validate, run, report and
search read the same folder.
"""
from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from typing import Protocol

from bench.config.schema import SuiteSpec
from bench.config.yaml_source import COMMAND_LINE, KeyPath, Origin, SuiteError


class CheckedSuite(Protocol):
    """What a check reads of a suite (bench/config/suite.py ``Suite`` provides it); declared here
    so the checks need not import the loader that calls them."""

    spec: SuiteSpec
    path: Path
    origins: dict[KeyPath, Origin]

    def cells(self) -> list[dict]: ...

    def error(self, message: str, key_path: KeyPath) -> SuiteError: ...

#: keys an ``exclude:`` rule or an ``overrides[].match`` may name (the grid's axes)
GRID_AXES = ("model", "size", "fusion", "dataset", "seed")
#: keys ``report.baseline`` may name (bench/reporting/suite_report.py GROUP)
BASELINE_KEYS = ("model", "size", "fusion", "dataset")


def _hint(name, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _axis_values(suite: CheckedSuite) -> dict[str, list]:
    """Each axis's values in the grid as written and in its cells (``default`` resolved)."""
    grid = suite.spec.grid
    values = {"model": list(grid.models), "size": list(grid.sizes), "fusion": list(grid.fusions),
              "dataset": [d.name for d in grid.datasets], "seed": list(grid.seeds)}
    for cell in suite.cells():
        for axis in ("model", "size", "fusion", "seed"):
            if cell[axis] not in values[axis]:
                values[axis].append(cell[axis])
    return values


def check_rules(suite: CheckedSuite) -> list[SuiteError]:
    """``exclude:`` rules and ``overrides[].match`` may only name grid axes."""
    errors = []
    rules = [(("exclude", i), rule) for i, rule in enumerate(suite.spec.exclude)]
    rules += [(("overrides", i, "match"), o.match) for i, o in enumerate(suite.spec.overrides)]
    for where, rule in rules:
        for key in rule:
            if key not in GRID_AXES:
                errors.append(suite.error(
                    f"{key!r} is not a grid axis{_hint(key, GRID_AXES)}; a rule matches cells by "
                    f"{', '.join(GRID_AXES)}", where + (key,)))
    return errors


def check_duplicates(suite: CheckedSuite) -> list[SuiteError]:
    """A value listed twice in a grid axis names the same cells twice (``seeds: [0, 1, 1]``
    lists six cells and runs four)."""
    grid, errors = suite.spec.grid, []
    axes = {"models": grid.models, "sizes": grid.sizes, "fusions": grid.fusions,
            "seeds": grid.seeds}
    for axis, values in axes.items():
        for value, count in Counter(values).items():
            if count > 1:
                index = [i for i, v in enumerate(values) if v == value][-1]
                errors.append(suite.error(f"{value!r} is listed {count} times in grid.{axis}; "
                                          f"list each once", ("grid", axis, index)))
    return errors


def check_baseline(suite: CheckedSuite) -> list[SuiteError]:
    """``report.baseline`` must name grid keys and values the grid has, or no cell is a
    baseline and every Δ column is empty."""
    baseline = suite.spec.report.baseline or {}
    values, errors = _axis_values(suite), []
    for key, wanted in baseline.items():
        where = ("report", "baseline", key)
        if key not in BASELINE_KEYS:
            hint = _hint(key, BASELINE_KEYS)
            errors.append(suite.error(f"{key!r} is not a report group key{hint}"
                                      f" (keys: {', '.join(BASELINE_KEYS)})", where))
            continue
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if value not in values[key]:
                errors.append(suite.error(
                    f"no cell of the grid has {key} {value!r}{_hint(value, values[key])} "
                    f"(grid {key}s: {', '.join(map(str, values[key]))})", where))
    return errors


def check_search_space(suite: CheckedSuite) -> list[SuiteError]:
    """``search.space`` keys must be settings a cell has: ``train.lr``, not ``train.lrate``;
    free-form mappings (``train.model_kwargs``, ``eval.protocol``) may go deeper, ``augment``
    only into its known options."""
    from bench.config.schema import EvalSpec, ProfileSpec, TrainSpec
    from bench.data.transforms import _AUGMENT_KEYS

    if suite.spec.search is None:
        return []
    sections = {"train": TrainSpec, "eval": EvalSpec, "profile": ProfileSpec}
    free = {("train", "model_kwargs"), ("eval", "protocol")}
    errors = []
    for key in suite.spec.search.space:
        parts, where = key.split("."), ("search", "space", key)
        fields = list(sections[parts[0]].model_fields)
        if parts[1] not in fields:
            errors.append(suite.error(f"{parts[0]} has no setting {parts[1]!r}"
                                      f"{_hint(parts[1], fields)}", where))
        elif tuple(parts[:2]) == ("train", "augment"):
            if len(parts) != 3 or parts[2] not in _AUGMENT_KEYS:
                errors.append(suite.error(f"train.augment has no option {'.'.join(parts[2:])!r}"
                                          f"{_hint(parts[-1], _AUGMENT_KEYS)} (options: "
                                          f"{', '.join(_AUGMENT_KEYS)})", where))
        elif len(parts) > 2 and tuple(parts[:2]) not in free:
            errors.append(suite.error(f"{parts[0]}.{parts[1]} is a single value; the key must "
                                      f"end there", where))
    return errors


def check_augment(suite: CheckedSuite) -> list[SuiteError]:
    from bench.data.transforms import _AUGMENT_KEYS, AugmentConfigError, parse_augment

    augment = suite.spec.train.augment
    errors = [suite.error(f"unknown augment option {key!r}{_hint(key, _AUGMENT_KEYS)} "
                          f"(options: {', '.join(_AUGMENT_KEYS)})", ("train", "augment", key))
              for key in augment if key not in _AUGMENT_KEYS]
    if not errors:
        try:
            parse_augment(augment or None)
        except AugmentConfigError as exc:
            errors.append(suite.error(str(exc), ("train", "augment")))
    return errors


def check_fusion_modalities(suite: CheckedSuite) -> list[SuiteError]:
    """Text fusions (``pairs_with = "text"``) and text models need a dataset with a text
    modality; image fusions and models need two images (``ssmbench list fusions``)."""
    import models
    from bench.data import get_dataset_class

    grid, errors, seen = suite.spec.grid, [], set()
    for cell in suite.cells():
        info = getattr(get_dataset_class(cell["dataset"]["name"]), "info", None)
        if info is None:  # modalities depend on options: the preflight builds it
            continue
        data_kind = "text" if "text" in info.modalities else "image"
        family = models.get_family(cell["model"])
        model_kind = "text" if family.task == "text" else "image"
        fusion_cls = models.FUSIONS.get(cell["fusion"]) if cell["fusion"] in models.FUSIONS \
            else None
        fusion_kind = getattr(fusion_cls, "pairs_with", "image")
        data_index = next(i for i, d in enumerate(grid.datasets) if d.name == info.name
                          or d.name == cell["dataset"]["name"])
        described = f"{info.name} ({' + '.join(info.modalities)})"
        if model_kind != data_kind and (cell["model"], info.name) not in seen:
            seen.add((cell["model"], info.name))
            errors.append(suite.error(
                f"model {cell['model']!r} takes {model_kind} + image data, dataset {described} "
                f"is {data_kind} data; exclude the pair or change the grid",
                ("grid", "models", grid.models.index(cell["model"]))))
        elif fusion_kind != data_kind and (cell["fusion"], info.name) not in seen:
            seen.add((cell["fusion"], info.name))
            fusion_index = grid.fusions.index(cell["fusion"]) if cell["fusion"] in grid.fusions \
                else None
            where = ("grid", "fusions", fusion_index) if fusion_index is not None else \
                ("grid", "models", grid.models.index(cell["model"]))
            errors.append(suite.error(
                f"fusion {cell['fusion']!r} fuses an image with {fusion_kind}, but dataset "
                f"{described} gives {data_kind} data (grid.datasets[{data_index}]); pick a "
                f"fusion of `ssmbench list fusions` that pairs with {data_kind}, or add an "
                f"exclude rule", where))
    return errors


def resolve_roots(suite: CheckedSuite) -> None:
    """Make every relative ``root:`` absolute against the folder of the file that wrote it (a
    base suite's root is relative to the base's folder; a ``--set`` root to the current
    folder). Done once at load, so every command reads the same data."""
    for i, dataset in enumerate(suite.spec.grid.datasets):
        if dataset.root is None:
            continue
        root = Path(dataset.root).expanduser()
        if not root.is_absolute():
            origin = suite.origins.get(("grid", "datasets", i, "root")) or \
                suite.origins.get(("grid", "datasets", i))
            if origin is not None and origin.file.startswith(COMMAND_LINE):
                base = Path.cwd()
            else:
                base = Path(origin.file).parent if origin is not None else suite.path.parent
            root = base / root
        dataset.root = str(root.absolute())


def check_root(suite: CheckedSuite, cls, dataset, index: int) -> list[SuiteError]:
    """A dataset read from files needs a ``root:`` folder in one of its layouts."""
    from bench.data.io import DataError

    layouts = getattr(cls, "layouts", ())
    name, where = dataset.name, ("grid", "datasets", index)
    make = (f"`ssmbench data convert {name} RAW_DIR OUT_DIR` makes one from the download "
            f"(layouts: {', '.join(layouts)})") if layouts else "fix the path"
    if not layouts and dataset.root is None:
        return []
    reads_data = any({"train", "eval"} & set(cell["stages"]) or
                     cell["profile"].get("input_size") is None
                     for cell in suite.cells() if cell["dataset"]["name"] == name)
    if dataset.root is None and reads_data:
        return [suite.error(f"dataset {name!r} needs root: the folder holding its files; "
                            f"{make}", where)]
    if dataset.root is None:  # a profile-only suite at a given input size reads no data
        return []
    root = Path(dataset.root)
    if not root.exists():
        return [suite.error(f"dataset root {str(root)!r} does not exist; point it at the "
                            f"dataset folder, or {make}", where + ("root",))]
    if not root.is_dir():
        return [suite.error(f"dataset root {str(root)!r} is a file, not a folder; point it at "
                            f"the folder holding the dataset, or {make}", where + ("root",))]
    if not layouts:
        return []
    try:
        cls.resolve_layout(root, dataset.options.get("layout", "auto"))
    except DataError as exc:
        return [suite.error(f"{exc}; {make}", where + ("root",))]
    return []
