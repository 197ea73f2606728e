"""Every YAML schema of the harness (pydantic): a suite's grid, train, eval, report, overrides,
profile and init sections, and a kernels suite's ``kernels:`` block; the search space is in
bench/config/search_space.py. Pure data: validating a suite needs no profiler, trainer or store,
so the checks (bench/config/checks.py) and the loader (bench/config/suite.py) build on it alone,
and the packages that act on a section import its spec from here."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.config.search_space import SearchSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- profile:


class ProfileSpec(BaseModel):
    """The suite's ``profile:`` section."""

    model_config = ConfigDict(extra="forbid")
    flops: bool = True
    conventions: list[str] = Field(default_factory=lambda: ["published", "full"])
    #: a cell fails its profile when more op calls than this had no FLOP handle
    max_unsupported: int = Field(default=0, ge=0)
    #: per-module FLOP table down to this depth below the model (1: encoder / fusion / head)
    by_module_depth: int = Field(default=2, ge=0)
    #: scan backend while counting FLOPs (shapes are all a count needs)
    flop_scan_backend: str = "shape"
    latency: bool = True
    #: untimed calls before timing: at least ``warmup`` calls and (if warmup > 0) ``warmup_s``
    warmup: int = Field(default=10, ge=0)
    warmup_s: float = Field(default=0.5, ge=0)
    #: calls per timing window (the issue's floor is 30; fewer are flagged in the result)
    samples: int = Field(default=30, ge=1)
    #: windows are timed for at least ``min_time_s``, then until one is quiet (its median within
    #: ``quiet_ratio`` of the fastest call) or ``max_time_s``; the quietest window is reported
    #: (bench/profiling/latency.py time_windows). min_time_s 0 and max_time_s 0: a single window
    min_time_s: float = Field(default=2.0, ge=0)
    max_time_s: float = Field(default=10.0, ge=0)
    quiet_ratio: float = Field(default=1.10, ge=1.0)
    max_windows: int = Field(default=1000, ge=1)
    #: also time the call with torch.utils.benchmark.Timer and record the ratio
    timer_check: bool = False
    #: keep freed memory in the process while timing (glibc; bench/profiling/latency.py steady_heap)
    steady_heap: bool = True
    #: time batch-1 latency in this many fresh processes and report the median one
    #: (bench/profiling/child.py); 1: in the profiling process itself
    processes: int = Field(default=1, ge=1)
    #: throughput sweep; [1] = batch-1 latency only
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    input_size: list[int] | None = None
    threads: int | None = Field(default=None, ge=1)
    precision: Literal["fp32", "amp", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    memory: bool = True
    breakdown: bool = False
    #: profiled calls summed per breakdown
    breakdown_repeats: int = Field(default=1, ge=1)
    #: also measure one training step (memory, time, breakdown)
    train_step: bool = False
    train_samples: int = Field(default=5, ge=1)
    cross_check: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("conventions")
    @classmethod
    def _known_conventions(cls, value: list[str]) -> list[str]:
        import kernels

        unknown = [c for c in value if c not in kernels.flops.CONVENTIONS]
        if unknown:
            raise ValueError(f"unknown FLOP convention(s) {unknown}; known: "
                             f"{list(kernels.flops.CONVENTIONS)}")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value):
            raise ValueError("batch_sizes must be a non-empty list of positive integers")
        return value


# ----------------------------------------------------------------------------- init:


class InitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backbone: str | None = None
    checkpoint: str | None = None
    strict: bool = True
    ema: bool = False
    allow_pickle: bool = True

    @model_validator(mode="after")
    def _one_source(self):
        if (self.backbone is None) == (self.checkpoint is None):
            raise ValueError("init needs exactly one of backbone: PATH (ImageNet weights for "
                             "the encoder) or checkpoint: PATH (a whole model)")
        return self

    @property
    def kind(self) -> str:
        return "backbone" if self.backbone is not None else "checkpoint"

    @property
    def path(self) -> str:
        return self.backbone if self.backbone is not None else self.checkpoint


def resolve_init(init: dict, base_dir: Path) -> dict:
    """``init`` validated, with its path made absolute against the suite's folder."""
    spec = InitSpec.model_validate(init)
    out = spec.model_dump(exclude_none=True)
    path = Path(spec.path).expanduser()
    out[spec.kind] = str(path if path.is_absolute() else (base_dir / path).resolve())
    return out


# ----------------------------------------------------------------------------- suite


class DatasetRef(BaseModel):
    """A dataset by registered name, with its options (``root`` for real data)."""
    model_config = ConfigDict(extra="allow")
    name: str
    root: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def loader_options(self) -> dict[str, Any]:
        """The dataset constructor's keywords: ``root`` (when given) and the options."""
        return {**({"root": self.root} if self.root is not None else {}), **self.options}


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
    #: bench/evaluation/protocols.py keys; None = the dataset's paper protocol (``info.protocol``)
    protocol: dict[str, Any] | None = None
    corruptions: list[str] = Field(default_factory=lambda: ["clean"], min_length=1)
    max_samples: int | None = Field(default=None, ge=1)

    @field_validator("protocol")
    @classmethod
    def _valid_protocol(cls, value):
        from bench.evaluation.protocols import resolve

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
    #: initial weights of every cell (bench/run/checkpoints.py): {backbone: PATH} or
    #: {checkpoint: PATH}
    init: InitSpec | None = None
    #: Optuna search over the grid's cells (bench/config/search_space.py; `ssmbench search`)
    search: SearchSpec | None = None
    kernels: dict[str, Any] | None = None


class CellConfig(Strict):
    """One cell as ``Suite.cells()`` resolves it. The store keeps it as that JSON dict (which
    its id hashes); the code that runs a cell reads it through this typed view, validated once
    where the dict enters (``run_cell``, the preflight, the init checks)."""
    model: str
    size: str
    fusion: str
    dataset: DatasetRef
    seed: int
    stages: list[Literal["train", "eval", "profile"]]
    train: TrainSpec
    eval: EvalSpec
    profile: ProfileSpec
    init: InitSpec | None = None
    id: str | None = None
    label: str | None = None


# ----------------------------------------------------------------------------- kernels suites


Mode = Literal["fwd", "fwdbwd"]


class SweepShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    B: int = Field(ge=1)
    D: int = Field(ge=1)
    L: int = Field(ge=1)
    N: int = Field(ge=1)
    G: int = Field(default=1, ge=1)
    modes: list[Mode] = Field(default_factory=lambda: ["fwd"])


class KernelSweepSpec(BaseModel):
    """The ``kernels:`` block of a kernels suite."""

    model_config = ConfigDict(extra="forbid")
    shapes: list[SweepShape] = Field(min_length=1)
    backends: list[str] = Field(default_factory=lambda: ["ref", "torch", "cpu"])
    #: external implementations timed beside the backends where installed
    peers: list[Literal["mamba_ref", "mambapy"]] = Field(default_factory=list)
    threads: int = Field(default=2, ge=1)
    min_run_time: float = Field(default=0.3, gt=0)
    #: a single call slower than this is timed once instead of repeatedly
    single_call_s: float = Field(default=1.0, gt=0)
    #: skip (backend, mode) cells whose estimated time exceeds this many seconds
    max_cell_s: float = Field(default=20.0, gt=0)
    #: seconds spent measuring each roofline (bandwidth, SGEMM, exp)
    roofline_s: float = Field(default=0.5, gt=0)
    #: the shapes of the two headline checks of the issue
    target_fwd: SweepShape | None = None
    target_fwdbwd: SweepShape | None = None
