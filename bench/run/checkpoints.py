"""A cell's initialisation (the suite key ``init:``; docs/suites.md "Initialisation").

    init: {backbone: PATH}      ImageNet weights into the encoder(s), through the model family's
                                ``load_backbone`` (Sigma and ReMamber: VMamba, MS2MNet:
                                torchvision's ResNet-50); a family whose paper trains from
                                scratch declares ``FROM_SCRATCH`` (the reason) and is refused
    init: {checkpoint: PATH}    a whole model, upstream-format or ssmbench-format, through the
                                model's ``checkpoint_filter_fn`` (``models.load_pretrained``)

Options: ``strict`` (default true: any missing, unexpected or mismatched key stops the run),
``ema`` (the checkpoint's EMA weights, e.g. ReMamber's ``--model-ema``), ``allow_pickle``
(default true: a file holding pickled Python objects besides tensors, such as VMamba's
classification checkpoints, is read with ``weights_only=False`` after ``weights_only=True``
refused it, and the load report says so). Paths are relative to the suite file.

``check_init_files`` is the preflight: before any cell trains, every file must exist, be real
weights (not a Git-LFS pointer nor an HTML page) and match the model's keys; the model is built
on the meta device for that, so the check costs the read of the file and no memory for weights.
``apply_init`` loads a cell's init and returns the load report stored with the cell.
"""
from __future__ import annotations

import sys
from typing import Any

from bench.config.schema import CellConfig, InitSpec
from models.errors import UserError


class InitError(UserError, ValueError):
    """An init that cannot be applied (no loader for the family, keys that do not match)."""


def backbone_loader(model, family: str | None = None):
    """The model family's ``load_backbone(model, path, strict, ema, allow_pickle)``, found in
    the module that registers the family (or defines the model's class)."""
    import models

    names = [type(model).__module__]
    if family is not None:
        names.insert(0, next(iter(models.get_family(family).sizes.values())).__module__)
    for name in names:
        module = sys.modules.get(name)
        loader = getattr(module, "load_backbone", None)
        if loader is not None:
            return loader
        why = getattr(module, "FROM_SCRATCH", None)
        if why:
            break
    else:
        why = f"{family or type(model).__name__} has no load_backbone in {names[0]}"
    raise InitError(f"not available for this model: {why}; use init.checkpoint for a "
                    f"whole-model checkpoint, or remove init")


def load_init(model, spec: InitSpec, family: str | None = None):
    """Load ``spec`` (its path resolved) into ``model``; returns the ``LoadReport``."""
    from models.pretrained import load_pretrained

    options = dict(strict=spec.strict, ema=spec.ema, allow_pickle=spec.allow_pickle)
    if spec.kind == "backbone":
        return backbone_loader(model, family)(model, spec.backbone, **options)
    return load_pretrained(model, spec.checkpoint, **options)


def apply_init(cell: CellConfig, model) -> dict[str, Any] | None:
    """The cell's init applied to ``model`` (run before training or evaluation); the load
    report as stored with the cell, or None without init."""
    if cell.init is None or not _needs_weights(cell.stages):
        return None
    report = load_init(model, cell.init, cell.model)
    return {"kind": cell.init.kind, "strict": cell.init.strict, "ema": cell.init.ema,
            **report.to_dict()}


def _needs_weights(stages: list[str]) -> bool:
    """Weights matter to training and evaluation; a profile-only cell (``ssmbench profile``)
    measures FLOPs and latency, which they do not change, so it runs without the files."""
    return bool({"train", "eval"} & set(stages))


def _meta_model(cell: CellConfig):
    """The cell's model with its parameters on the meta device (keys and shapes only)."""
    import torch

    from bench.run.cell_build import build_model, dataset_info

    info = dataset_info(cell)
    try:
        with torch.device("meta"):
            return build_model(cell, info)
    except Exception:  # noqa: BLE001 - a constructor that computes on tensors: build it for real
        return build_model(cell, info)


def check_init_files(suite, cells: list[dict]) -> list[str]:
    """Preflight of every cell's init (module docstring); raises ``SuiteError`` (exit 2)
    naming the suite key. Returns one line per distinct (model, file) checked."""
    from models.pretrained import CheckpointError, match_model, read_state_dict, sniff_checkpoint

    lines, seen, states = [], set(), {}
    for cell in cells:
        init = cell.get("init")
        stages = cell.get("stages", [])
        if not init:
            if "eval" in stages and "train" not in stages:
                raise suite.error("an eval-only cell (stages without train) evaluates "
                                  "randomly initialised weights; add init: {checkpoint: PATH} "
                                  f"(cell {cell['label']})", ("stages",))
            continue
        if not _needs_weights(stages):
            continue
        spec = InitSpec.model_validate(init)
        where = ("init", spec.kind)
        if "eval" in stages and "train" not in stages and spec.kind == "backbone":
            raise suite.error("an eval-only cell needs a whole-model init: {checkpoint: PATH}; "
                              "ImageNet backbone weights alone leave the head random", where)
        key = (cell["model"], cell["size"], cell["fusion"], cell["dataset"]["name"],
               repr(sorted(init.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            sniff_checkpoint(spec.path)
            if (spec.path, spec.ema) not in states:
                states[(spec.path, spec.ema)] = read_state_dict(spec.path, ema=spec.ema,
                                                                allow_pickle=spec.allow_pickle)
            state = states[(spec.path, spec.ema)]
        except CheckpointError as exc:
            raise suite.error(f"{exc}", where) from None
        model = _meta_model(CellConfig.model_validate(cell))
        if spec.kind == "backbone":  # the family's loader decides what strict allows
            loader = _checked(suite, where, backbone_loader, model, cell["model"])
            try:
                report = _backbone_report(loader, model, spec)
            except ValueError as exc:
                raise suite.error(f"init.backbone does not match {cell['model']}/"
                                  f"{cell['size']}: {exc}\nuse the ImageNet checkpoint of this "
                                  f"size, or set init.strict: false", where) from None
        else:
            _, report = match_model(model, state, spec.path)
        if spec.kind == "checkpoint" and spec.strict and not report.ok:
            raise suite.error(f"init.{spec.kind} does not match {cell['model']}/{cell['size']}"
                              f" (strict):\n{report.summary()}\nuse the checkpoint of this "
                              f"model and size, or set init.strict: false to load what "
                              f"matches", where)
        count = f"{len(report.loaded)} tensors match" if report is not None else "readable"
        lines.append(f"init {spec.kind} {spec.path}: {count} ({cell['model']}/{cell['size']})")
    return lines


def _checked(suite, where, fn, *args):
    try:
        return fn(*args)
    except InitError as exc:
        raise suite.error(str(exc), where) from None


def _backbone_report(loader, model, spec: InitSpec):
    """The backbone loader's report on a meta model (loading into meta tensors is a no-op
    that still matches every key and shape); its strict check raises ValueError."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns that copying into meta is a no-op
            warnings.simplefilter("ignore", UserWarning)
            return loader(model, spec.backbone, strict=spec.strict, ema=spec.ema,
                          allow_pickle=spec.allow_pickle)
    except (NotImplementedError, RuntimeError):  # a loader that touches values on meta
        return None
