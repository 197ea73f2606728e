"""The suite's YAML schema (pydantic): grid, train, eval, report, overrides, and the sections
other modules own (``profile:`` bench/profile.py, ``init:`` bench/checkpoints.py, ``search:``
bench/search_space.py). Pure data: validating a suite's keys needs nothing else of the harness,
so the suite checks (bench/suite_checks.py) and the loader (bench/suite.py) both build on it."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.checkpoints import InitSpec
from bench.profile import ProfileSpec
from bench.search_space import SearchSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(BaseModel):
    """A dataset by registered name, with its options (``root`` for real data)."""
    model_config = ConfigDict(extra="allow")
    name: str
    root: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Grid(Strict):
    models: list[str] = Field(min_length=1)
    sizes: list[str] = Field(min_length=1)
    fusions: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    datasets: list[DatasetRef] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_to_refs(cls, value):
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class TrainSpec(Strict):
    iterations: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["poly", "cosine", "constant", "step"] = "poly"
    poly_power: float = Field(default=0.9, gt=0)
    #: step schedule: multiply the lr by ``gamma`` at each milestone (iterations), as
    #: torch's MultiStepLR (MS2MNet: epochs 15, 25, 35 of 1000 iterations, gamma 0.1)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_iters: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=1e-6, ge=0, le=1)
    param_groups: Literal["all", "upstream"] = "all"
    grad_clip: float | None = Field(default=None, gt=0)
    augment: dict[str, Any] = Field(default_factory=dict)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    threads: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    num_workers: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=100, ge=1)
    log_every: int = Field(default=10, ge=1)
    #: validate every this many iterations (0 = never): training curves and search pruning
    val_every: int = Field(default=0, ge=0)
    val_split: str = "val"
    val_max_samples: int | None = Field(default=None, ge=1)


class EvalSpec(Strict):
    split: str = "test"
    batch_size: int = Field(default=16, ge=1)
    #: bench/protocols.py keys; None = the dataset's paper protocol (``info.protocol``)
    protocol: dict[str, Any] | None = None
    corruptions: list[str] = Field(default_factory=lambda: ["clean"], min_length=1)
    max_samples: int | None = Field(default=None, ge=1)

    @field_validator("protocol")
    @classmethod
    def _valid_protocol(cls, value):
        from bench.protocols import resolve

        if value is not None:
            resolve(value)  # ProtocolError (a ValueError) names the bad key or value
        return value


class ReportSpec(Strict):
    title: str | None = None
    #: the cells Δ is computed against: grid keys that identify them, e.g. {fusion: rgb_only}
    baseline: dict[str, Any] | None = None
    metrics: list[str] = Field(default_factory=lambda: ["mIoU", "mF1", "aAcc"])
    #: named groups of classes reported as one IoU column, e.g. {"XOR pair": [7, 8]}
    class_groups: dict[str, list[int]] = Field(default_factory=dict)
    plots: list[Literal["pareto", "per_class", "curves", "latency", "corruptions"]] = Field(
        default_factory=lambda: ["pareto", "per_class", "curves", "corruptions"])
    #: published figures shown beside measured ones: {model_size: {params_m: .., gmacs: ..}}
    published: dict[str, dict[str, float]] = Field(default_factory=dict)


class Override(Strict):
    match: dict[str, Any]
    set: dict[str, Any]


class SuiteSpec(Strict):
    name: str | None = None
    description: str = ""
    kind: Literal["train", "kernels"] = "train"
    #: modules (dotted names, or .py files relative to the suite) imported before validation,
    #: so a suite can use models, fusions or datasets registered outside the package
    plugins: list[str] = Field(default_factory=list)
    grid: Grid | None = None
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    stages: list[Literal["train", "eval", "profile"]] = Field(
        default_factory=lambda: ["train", "eval", "profile"], min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    profile: ProfileSpec = Field(default_factory=ProfileSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    #: initial weights of every cell (bench/checkpoints.py): {backbone: PATH} or {checkpoint: PATH}
    init: InitSpec | None = None
    #: Optuna search over the grid's cells (bench/search_space.py; `ssmbench search`)
    search: SearchSpec | None = None
    kernels: dict[str, Any] | None = None
