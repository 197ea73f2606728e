"""Preflight: every cell of a suite is tried on the CPU before any of them trains.

A configuration error that only shows inside a cell (a fusion whose streams do not fit the data,
a model option the constructor does not take, a split the dataset does not have, a corruption
that cannot be applied) would otherwise fail every cell after hours of training. The preflight
builds each distinct dataset split the suite reads (train with the suite's augmentation, the
validation split, the test split and every robustness set) and takes its real first item; then
builds each distinct (model, size, fusion, modalities, model options) and runs one training
forward and one backward pass on a tiny batch made of those items. Every problem is collected and
reported at once, one ``SuiteError`` per problem naming the file, line and key path.

Cost: paper-size models are run on a crop of at most ``MAX_SIDE`` pixels per side (a multiple of
32, the coarsest stride of the encoders), so a model costs about a second on 2 CPU cores.

Every ``init:`` checkpoint is opened and matched against its model's keys
(``bench.run.checkpoints.check_init_files``). ``PREFLIGHT_CHECKS`` is the extension point for
further per-suite checks that need the cells: each is called with the suite and its cells and
returns a list of ``SuiteError``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.config.suite import Suite
from bench.config.yaml_source import SuiteError, raise_all

#: largest side of the preflight batch; a multiple of 32 (the encoders' coarsest stride)
MAX_SIDE = 64
#: models larger than this (paper sizes) are only constructed, on the meta device: a forward
#: and backward of a 50M-parameter model takes tens of seconds on a CPU. The same family and
#: fusion at a small size runs the real pass in the CPU-scale suites.
MAX_RUN_PARAMETERS = 5_000_000

#: further checks: ``check(suite, cells) -> list[SuiteError]``, run after the model checks
PREFLIGHT_CHECKS: list[Callable[[Suite, list[dict]], list[SuiteError]]] = []


@dataclass
class PreflightSummary:
    models: int = 0
    meta_only: int = 0
    splits: int = 0
    seconds: float = 0.0
    model_seconds: dict[str, float] = field(default_factory=dict)
    #: one line per distinct (model, init file) checked (bench/run/checkpoints.py)
    init_lines: list[str] = field(default_factory=list)

    def format(self) -> str:
        slowest = max(self.model_seconds.values(), default=0.0)
        meta = (f", {self.meta_only} paper-size model(s) constructed on the meta device"
                if self.meta_only else "")
        return (f"preflight: {self.splits} dataset split(s) read, {self.models} distinct "
                f"model(s) built and run forward + backward on the CPU{meta}, in "
                f"{self.seconds:.1f} s (slowest model {slowest:.1f} s)"
                + "".join(f"\n  {line}" for line in self.init_lines))


def _dataset_index(suite: Suite, dataset: dict) -> int:
    for i, ref in enumerate(suite.spec.grid.datasets):
        if ref.name == dataset["name"] and all(dataset.get(k) == v
                                               for k, v in ref.options.items()):
            return i
    return 0


def _splits_read(cell: dict) -> list[tuple[str, str, str | None, tuple]]:
    """(role, split, corruption, key path of the setting) for every split the cell reads."""
    out = []
    if "train" in cell["stages"]:
        out.append(("train", "train", None, ("grid", "datasets")))
        if cell["train"]["val_every"]:
            out.append(("val", cell["train"]["val_split"], None, ("train", "val_split")))
    if "eval" in cell["stages"]:
        for j, name in enumerate(cell["eval"]["corruptions"]):
            if name == "clean":
                out.append(("test", cell["eval"]["split"], None, ("eval", "split")))
            else:
                out.append((f"test/{name}", cell["eval"]["split"], name,
                            ("eval", "corruptions", j)))
    return out


def _first_items(suite: Suite, cells: list[dict], errors: list[SuiteError],
                 summary: PreflightSummary) -> dict[str, list[dict]]:
    """The first item of every split each dataset is read with, keyed by the dataset's json."""
    from bench.data import build_dataset, get_dataset_class

    items: dict[str, list[dict]] = {}
    seen: set = set()
    failed: set = set()
    for cell in cells:
        dataset = cell["dataset"]
        key = json.dumps(dataset, sort_keys=True, default=str)
        items.setdefault(key, [])
        options = {k: v for k, v in dataset.items() if k != "name"}
        index = _dataset_index(suite, dataset)
        for role, split, corruption, where in _splits_read(cell):
            augment = cell["train"]["augment"] or None if role == "train" else None
            ident = (key, split, corruption, json.dumps(augment, sort_keys=True))
            if ident in seen:
                continue
            seen.add(ident)
            if where == ("grid", "datasets"):
                where = ("grid", "datasets", index)
            try:
                # a dataset may say how to build its first items cheaply (synrgbx: one scene)
                cheap = getattr(get_dataset_class(dataset["name"]), "preflight_options", None)
                built = build_dataset(dataset["name"], split=split, augment=augment,
                                      corruption=corruption,
                                      **(cheap(**options) if cheap else options))
                if len(built) == 0:
                    raise ValueError(f"the {split} split has no samples")
                items[key].append(built[0])
                summary.splits += 1
            except Exception as exc:  # noqa: BLE001 - every failure is reported against its key
                message = _message(exc)
                if (where, message) not in failed:
                    failed.add((where, message))
                    errors.append(suite.error(
                        f"dataset {dataset['name']!r}, {role} split {split!r}: {message}",
                        where))
    return items


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text if type(exc).__module__.startswith("bench") else f"{type(exc).__name__}: {text}"


def _tiny_batch(items: list[dict]) -> dict[str, Any]:
    """One batch from the first items of the splits: each cropped to the common size (at most
    MAX_SIDE, a multiple of 32 when the items are at least that large)."""
    import torch

    heights = [item["label"].shape[-2] for item in items]
    widths = [item["label"].shape[-1] for item in items]
    h, w = min(heights), min(widths)
    h = min(h, MAX_SIDE) // 32 * 32 or h
    w = min(w, MAX_SIDE) // 32 * 32 or w
    spatial = items[0]["label"].shape[-2:]
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if not torch.is_tensor(values[0]):
            continue
        if values[0].dim() >= 2 and values[0].shape[-2:] == spatial:
            values = [v[..., :h, :w] for v in values]
        if len({tuple(v.shape) for v in values}) > 1:
            values = [values[0]] * len(values)  # text of several lengths: repeat the first
        batch[key] = torch.stack(values)
    if len(items) == 1:  # BatchNorm needs two samples in training mode
        batch = {k: torch.cat([v, v]) for k, v in batch.items()}
    return batch


def _model_problem(suite: Suite, cell: dict, exc: BaseException, stage: str) -> SuiteError:
    grid = suite.spec.grid
    text = _message(exc)
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    kwargs = cell["train"].get("model_kwargs") or {}
    if isinstance(exc, TypeError) and unexpected and unexpected.group(1) in kwargs:
        name = unexpected.group(1)
        return suite.error(f"model {cell['model']!r} takes no option {name!r} ({text}); remove "
                           f"it or fix its spelling", ("train", "model_kwargs", name))
    if cell["fusion"] in grid.fusions:
        where = ("grid", "fusions", grid.fusions.index(cell["fusion"]))
    else:
        where = ("grid", "models", grid.models.index(cell["model"]))
    return suite.error(f"{cell['label'].rsplit('/seed', 1)[0]}: {stage} fails on the first "
                       f"items of the data: {text}; change the grid or exclude this cell", where)


def _synthetic_batch(info) -> dict[str, Any]:
    """Two random samples at MAX_SIDE for cells that read no data (profile-only suites)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    batch = {}
    for name, channels in info.modalities.items():
        batch[name] = torch.randint(1, 10, (2, channels), generator=gen) if name == "text" \
            else torch.randn(2, channels, MAX_SIDE, MAX_SIDE, generator=gen)
    batch["label"] = torch.randint(0, max(2, info.num_classes), (2, MAX_SIDE, MAX_SIDE),
                                   generator=gen)
    return batch


def _try_models(suite: Suite, cells: list[dict], items: dict[str, list[dict]],
                errors: list[SuiteError], summary: PreflightSummary) -> None:
    import torch

    from bench.config.schema import CellConfig
    from bench.run.cell_build import build_model, dataset_info
    from bench.run.train import split_batch
    from kernels.selective_scan import scan_backend

    seen = set()
    for cell in cells:
        key = json.dumps(cell["dataset"], sort_keys=True, default=str)
        reads_data = bool({"train", "eval"} & set(cell["stages"]))
        data = items.get(key)
        if reads_data and not data:
            continue  # no item could be read: already reported
        typed = CellConfig.model_validate(cell)
        try:
            info = dataset_info(typed)
        except Exception as exc:  # noqa: BLE001
            if reads_data:
                errors.append(suite.error(_message(exc), (
                    "grid", "datasets", _dataset_index(suite, cell["dataset"]))))
            continue
        ident = json.dumps([cell["model"], cell["size"], cell["fusion"], dict(info.modalities),
                            info.num_classes, cell["train"].get("model_kwargs")],
                           sort_keys=True, default=str)
        if ident in seen:
            continue
        seen.add(ident)
        start = time.perf_counter()
        stage = "building the model"
        try:
            # the constructor first on the meta device: no memory, no initialisation cost
            with torch.device("meta"):
                size = sum(p.numel() for p in build_model(typed, info).parameters())
            if size > MAX_RUN_PARAMETERS:
                summary.meta_only += 1
                continue
            # the torch scan: the same shapes and gradients as the compiled kernel, which a
            # first use would build (minutes) before any cell needs it
            with torch.random.fork_rng(), scan_backend("torch"):
                torch.manual_seed(0)
                model = build_model(typed, info)
                model.train()
                stage = "the training forward pass"
                batch = _tiny_batch(data) if data else _synthetic_batch(info)
                inputs, target = split_batch(batch, model.modalities)
                state = {"iteration": 0, "max_iters": 1, "epoch": 1, "max_epochs": 1}
                loss = model.forward_train(inputs, target, state)["loss"]
                stage = "the backward pass"
                loss.backward()
                if not torch.isfinite(loss):
                    raise ValueError(f"the loss is {loss.item()}")
            summary.models += 1
        except Exception as exc:  # noqa: BLE001 - every failure is reported against its key
            errors.append(_model_problem(suite, cell, exc, stage))
        finally:
            summary.model_seconds[ident] = time.perf_counter() - start


def preflight(suite: Suite, cells: list[dict] | None = None) -> PreflightSummary:
    """Read the first item of every split and run every distinct model once; raise
    ``SuiteError``/``SuiteErrors`` with every problem found."""
    start = time.perf_counter()
    cells = suite.cells() if cells is None else cells
    summary = PreflightSummary()
    errors: list[SuiteError] = []
    needs_data = [c for c in cells if {"train", "eval"} & set(c["stages"])]
    items = _first_items(suite, needs_data, errors, summary)
    _try_models(suite, cells, items, errors, summary)
    from bench.run.checkpoints import check_init_files  # init files: exist, real weights, keys fit

    try:
        summary.init_lines = check_init_files(suite, cells)
    except SuiteError as exc:
        errors.append(exc)
    for check in PREFLIGHT_CHECKS:
        errors += check(suite, cells)
    summary.seconds = time.perf_counter() - start
    raise_all(errors)
    return summary
