"""Suites: loading (the schema is bench/config/schema.py), validation against the registries,
grid expansion, exclude rules, per-cell overrides and stable cell ids. The format is documented
in docs/suites.md.

``load_suite(path, set_values)`` returns a ``Suite`` whose ``cells()`` are fully resolved
configurations; a cell's id is a hash of its resolved configuration minus the settings that
cannot change its result (``NOT_IN_CELL_ID``), so the same experiment always has the same id, a
change that can move a number gives a new one, and a change of logging or checkpoint cadence
does not re-run anything.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.config import checks
from bench.config.schema import (
    DatasetRef,
    EvalSpec,
    Grid,
    InitSpec,
    ProfileSpec,
    ReportSpec,
    SuiteSpec,
    TrainSpec,
    resolve_init,
)
from bench.config.yaml_source import (
    COMMAND_LINE,
    KeyPath,
    Origin,
    SuiteError,
    apply_set,
    format_key_path,
    load_with_bases,
    parse_set,
    raise_all,
)

#: settings that cannot change a cell's trained model, metrics or history values, left out of
#: its id: where the data lives, logging and checkpoint cadence, DataLoader worker processes
#: (every item is seeded by (seed, epoch, index): bench/run/train.py ``SeededItems``) and the
#: profiling settings. Everything else, including keys added later, is part of the id. A cell
#: that finished keeps its stored profile when ``profile.*`` changes (docs/suites.md).
#: ``train.threads`` stays in: the thread count changes the order of float reductions.
NOT_IN_CELL_ID = ("dataset.root", "train.log_every", "train.checkpoint_every",
                  "train.num_workers", "profile")


def cell_id(config: dict) -> str:
    """Stable id: a hash of the resolved configuration minus ``NOT_IN_CELL_ID``."""
    identity = copy.deepcopy(config)
    for dotted in NOT_IN_CELL_ID:
        *parents, last = dotted.split(".")
        node = identity
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    init = identity.get("init")
    for key in ("backbone", "checkpoint"):
        if isinstance(init, dict) and init.get(key):
            # like dataset.root: where the weights lie is not which weights they are; the file
            # name stays, so a different checkpoint is a different cell
            init[key] = Path(str(init[key])).name
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cell_label(config: dict) -> str:
    """Human-readable key of a cell within its suite: model/size/fusion/dataset/seed."""
    ds = config["dataset"]
    opts = ",".join(f"{k}={v}" for k, v in sorted(ds.items()) if k not in ("name", "root"))
    dataset = ds["name"] + (f"[{opts}]" if opts else "")
    return f"{config['model']}/{config['size']}/{config['fusion']}/{dataset}/seed{config['seed']}"


def _matches(rule: dict[str, Any], config: dict) -> bool:
    for key, wanted in rule.items():
        value = config["dataset"]["name"] if key == "dataset" else config[key]
        options = wanted if isinstance(wanted, list) else [wanted]
        if value not in options:
            return False
    return True


class Suite:
    """A validated suite: its spec, source file, origins of every key, and expanded cells."""

    def __init__(self, spec: SuiteSpec, path: Path, origins: dict[KeyPath, Origin]):
        self.spec = spec
        self.path = path
        self.origins = origins
        self.name = spec.name or path.stem

    def error(self, message: str, key_path: KeyPath) -> SuiteError:
        origin = _nearest_origin(self.origins, key_path)
        # a value under this key set by --set is the likeliest cause: name the command line
        n = len(tuple(key_path))
        from_command_line = [o for k, o in self.origins.items() if k[:n] == tuple(key_path)
                             and o.file.startswith(COMMAND_LINE)]
        if from_command_line:
            origin = from_command_line[0]
        return SuiteError(message, origin.file if origin else str(self.path), key_path,
                          origin.line if origin else None)

    def cells(self) -> list[dict]:
        """Every cell of the grid, minus excluded ones, with overrides applied."""
        spec, grid = self.spec, self.spec.grid
        if grid is None:  # a kernels suite has no grid of cells
            return []
        from models import get_family  # bench -> models

        out = []
        for model in grid.models:
            for size in grid.sizes:
                for fusion in grid.fusions:
                    resolved_fusion = get_family(model).default_fusion if fusion == "default" \
                        else fusion
                    for dataset in grid.datasets:
                        for seed in grid.seeds:
                            config = {
                                "model": model, "size": size, "fusion": resolved_fusion,
                                "dataset": {"name": dataset.name,
                                            **({"root": dataset.root} if dataset.root else {}),
                                            **dataset.options},
                                "seed": seed,
                                "stages": list(spec.stages),
                                "train": spec.train.model_dump(),
                                "eval": spec.eval.model_dump(),
                                "profile": spec.profile.model_dump(),
                            }
                            if spec.init is not None:  # absent without init: ids unchanged
                                config["init"] = self._resolve_init(
                                    spec.init.model_dump(exclude_none=True), ("init",))
                            if any(_matches(rule, config) for rule in spec.exclude):
                                continue
                            out.append(self._apply_overrides(config))
        for config in out:
            config["id"] = cell_id({k: v for k, v in config.items() if k != "id"})
            config["label"] = cell_label(config)
        return out

    def _apply_overrides(self, config: dict) -> dict:
        for index, override in enumerate(self.spec.overrides):
            if not _matches(override.match, config):
                continue
            for dotted, value in override.set.items():
                path = dotted.split(".")
                node = config
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
            where = ("overrides", index, "set")
            for section, model_cls in (("train", TrainSpec), ("eval", EvalSpec),
                                       ("profile", ProfileSpec)):
                try:
                    config[section] = model_cls.model_validate(config[section]).model_dump()
                except ValidationError as exc:
                    raise self.error(_first_error(exc, section), where) from None
            if not set(config["stages"]) <= {"train", "eval", "profile"}:
                raise self.error("stages must be among train, eval, profile", where)
            if any(d == "init" or d.startswith("init.") for d in override.set):
                config["init"] = self._resolve_init(config["init"], ("overrides", index))
        return config

    def _resolve_init(self, init: dict, where: KeyPath) -> dict:
        """``init`` with its path absolute, relative to the file that set it (to the working
        directory when ``--set`` on the command line set it)."""
        kind = "checkpoint" if init.get("checkpoint") else "backbone"
        origin = _nearest_origin(self.origins, (*where, kind))
        base = self.path.parent
        if origin and Path(origin.file).is_file():
            base = Path(origin.file).parent
        elif origin and origin.file.startswith("command line"):
            base = Path.cwd()
        try:
            return resolve_init(init, base)
        except ValidationError as exc:
            raise self.error(_first_error(exc, "init"), where) from None


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = format_key_path(tuple(err["loc"]))
    return f"{prefix + '.' if prefix and loc else prefix}{loc}: {err['msg']}"


def _nearest_origin(origins: dict[KeyPath, Origin], path: KeyPath) -> Origin | None:
    path = tuple(path)
    while path:
        if path in origins:
            return origins[path]
        path = path[:-1]
    return origins.get(())


def load_suite(path: str | Path, set_values: list[str] | None = None,
               check_names: bool = True) -> Suite:
    """Load, merge bases, apply ``--set`` values, validate. Raises ``SuiteError``."""
    path = Path(path)
    data, origins = load_with_bases(path)
    apply_set(data, origins, parse_set(set_values or []))
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        # pydantic adds the union branch / validator name to some locations; drop non-keys
        loc = tuple(p for p in loc if isinstance(p, int) or p in _known_keys(data, loc))
        origin = _nearest_origin(origins, loc)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}{_did_you_mean_key(loc)}"
        raise SuiteError(message, origin.file if origin else str(path), loc,
                         origin.line if origin else None) from None
    suite = Suite(spec, path, origins)
    import_plugins(suite)
    if spec.kind == "train":
        if spec.grid is None:
            raise suite.error("a train suite needs a grid: (models, sizes, datasets, ...)", ())
        checks.resolve_roots(suite)
        # rules naming a non-axis would fail inside cells() with a KeyError
        raise_all(checks.check_rules(suite))
        if check_names:
            validate_names(suite)
            check_corruptions(suite)
            check_device(suite)
            raise_all([error for check in NAME_CHECKS for error in check(suite)])
        if not suite.cells():
            raise suite.error("the grid is empty after the exclude rules", ("exclude",))
    elif spec.kernels is None:
        raise suite.error("a kernels suite needs a kernels: block", ("kind",))
    return suite


_IMPORTED_PLUGINS: dict[str, Any] = {}


def import_plugins(suite: Suite) -> None:
    import importlib
    import importlib.util

    for i, ref in enumerate(suite.spec.plugins):
        if ref in _IMPORTED_PLUGINS:
            continue
        try:
            if ref.endswith(".py"):
                file = Path(ref) if Path(ref).is_absolute() else suite.path.parent / ref
                if not file.is_file():
                    raise suite.error(f"plugin file {ref!r} not found ({file})", ("plugins", i))
                spec = importlib.util.spec_from_file_location(f"ssmbench_plugin_{file.stem}", file)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(ref)
        except SuiteError:
            raise
        except Exception as exc:  # noqa: BLE001 - report any import failure against the key
            raise suite.error(f"cannot import plugin {ref!r}: {type(exc).__name__}: {exc}",
                              ("plugins", i)) from None
        _IMPORTED_PLUGINS[ref] = module


def _known_keys(data: Any, loc: tuple) -> set:
    keys, node = set(), data
    for part in loc:
        if isinstance(node, dict):
            keys.update(node.keys())
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
    return keys


def _did_you_mean_key(loc: tuple) -> str:
    import difflib

    models = {(): SuiteSpec, ("grid",): Grid, ("train",): TrainSpec, ("eval",): EvalSpec,
              ("profile",): ProfileSpec, ("report",): ReportSpec, ("init",): InitSpec}
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    model = models.get(parent)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


#: checks of names against what exists, run after validate_names; each returns every problem
#: it finds (bench/config/checks.py), and load_suite reports them all at once
NAME_CHECKS = [checks.check_duplicates, checks.check_baseline,
               checks.check_search_space, checks.check_augment,
               checks.check_fusion_modalities]


def validate_names(suite: Suite) -> None:
    """Every model, size, fusion and dataset must be registered; roots must exist."""
    import models
    from bench.data import UnknownDatasetError, get_dataset_class

    grid = suite.spec.grid
    for i, name in enumerate(grid.models):
        try:
            models.get_family(name)
        except models.UnknownNameError as exc:
            raise suite.error(str(exc), ("grid", "models", i)) from None
    for i, size in enumerate(grid.sizes):
        if not any(size in models.list_sizes(m) for m in grid.models):
            known = sorted({s for m in grid.models for s in models.list_sizes(m)})
            from models.registry import suggest
            raise suite.error(f"no model in the grid has size {size!r}{suggest(size, known)} "
                              f"(sizes: {', '.join(known)})", ("grid", "sizes", i))
    for i, fusion in enumerate(grid.fusions):
        if fusion != "default" and fusion not in models.FUSIONS:
            try:
                models.FUSIONS.get(fusion)
            except models.UnknownNameError as exc:
                raise suite.error(str(exc), ("grid", "fusions", i)) from None
    for i, dataset in enumerate(grid.datasets):
        try:
            cls = get_dataset_class(dataset.name)
        except UnknownDatasetError as exc:
            raise suite.error(str(exc), ("grid", "datasets", i, "name")) from None
        check_dataset_options(suite, cls, dataset, i)
        raise_all(checks.check_root(suite, cls, dataset, i))
    missing = [(c["model"], c["size"]) for c in suite.cells()
               if not models.is_model(c["model"], c["size"])]
    if missing:
        model, size = missing[0]
        raise suite.error(f"model {model!r} has no size {size!r} (sizes: "
                          f"{', '.join(models.list_sizes(model))}); add an exclude rule or "
                          f"change grid.sizes", ("grid", "sizes"))


#: constructor keywords every dataset takes from the harness, not from a suite's options
_HARNESS_KEYWORDS = {"self", "split", "augment", "corruption", "root"}


def check_dataset_options(suite: Suite, cls, dataset: DatasetRef, index: int) -> None:
    """Option names the dataset's constructor does not take (a typo would otherwise fail every
    cell at run time), and the values a dataset's ``check_options`` hook refuses."""
    import difflib
    import inspect

    from bench.data.io import DataError

    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if n not in _HARNESS_KEYWORDS
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in dataset.options:
        if not takes_any and key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise suite.error(f"dataset {dataset.name!r} has no option {key!r}{hint} "
                              f"(options: {', '.join(known) or 'none'})",
                              ("grid", "datasets", index, key))
    check = getattr(cls, "check_options", None)
    if check is not None:
        try:
            check(**dataset.options)
        except DataError as exc:
            raise suite.error(str(exc), ("grid", "datasets", index)) from None


def check_device(suite: Suite) -> None:
    """``train.device: cuda`` needs a CUDA device here (else every cell would fail at run
    time)."""
    import torch

    if torch.cuda.is_available():
        return
    for cell in suite.cells():
        if cell["train"]["device"] == "cuda":
            where = ("train", "device") if suite.spec.train.device == "cuda" else ("overrides",)
            raise suite.error(f"train.device is 'cuda' (cell {cell['label']}) but this machine "
                              f"has no CUDA device; use device: auto or cpu, or run it on a "
                              f"GPU machine", where)


def check_corruptions(suite: Suite) -> None:
    """Every robustness set in eval.corruptions must be a registered corruption that the grid's
    datasets can take (an unknown one would otherwise fail every cell after training)."""
    import difflib

    from bench.data import get_dataset_class
    from bench.data.corruptions import (
        UnknownCorruptionError,
        check_applicable,
        known_corruptions,
        parse_corruption,
    )

    kinds = [k.partition(":")[0] for k in known_corruptions()]
    for i, name in enumerate(suite.spec.eval.corruptions):
        where = ("eval", "corruptions", i)
        try:
            parse_corruption(name)
        except UnknownCorruptionError as exc:
            kind = str(name).partition(":")[0]
            close = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close and close[0] != kind else ""
            raise suite.error(f"{exc}{hint}", where) from None
        for dataset in suite.spec.grid.datasets:
            info = getattr(get_dataset_class(dataset.name), "info", None)
            if info is None:
                continue
            try:
                check_applicable(name, info.modalities)
            except UnknownCorruptionError as exc:
                raise suite.error(f"{exc} ({dataset.name})", where) from None
