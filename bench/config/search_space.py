"""The ``search:`` block of a suite (pydantic): the space, objectives, sampler, pruner, budget.

    search:
      space:
        train.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
        train.warmup_iters: {type: int, low: 0, high: 40, step: 10}
        train.schedule: {type: categorical, choices: [poly, cosine]}
        train.model_kwargs.fusion_kwargs.heads: {type: categorical, choices: [1, 2],
                                                 when: {fusion: [cross_attn]}}
      objectives: [{metric: val_mIoU}]           # + {metric: gmacs} for a Pareto front
      sampler: {name: tpe, seed: 0}              # tpe | grid | nsga2 | random
      pruner: {name: median, n_startup_trials: 3} # median | hyperband | none
      n_trials: 16
      timeout: 900                               # seconds per worker, optional

Keys of ``space`` are dotted paths into a cell's configuration (``train.*``, ``eval.*``,
``profile.*``); ``when`` makes a parameter conditional on grid keys of the trial's cell
(``model``, ``size``, ``fusion``). When the grid has more than one model/size/fusion, every
trial also picks its cell (the categorical parameter ``arch``), so one study compares them.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: objective metrics read from a cell's result, and the direction each is optimised in
METRICS = {"val_mIoU": "maximize", "mIoU": "maximize", "latency_ms": "minimize",
           "gmacs": "minimize", "params_m": "minimize"}
SECTIONS = ("train", "eval", "profile")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[Any] | None = None
    #: only for cells matching these grid keys, e.g. {fusion: [cross_attn, gated]}
    when: dict[Literal["model", "size", "fusion"], Any] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("a categorical parameter takes choices only, not low/high/"
                                 "log/step")
            return self
        if self.choices is not None:
            raise ValueError(f"choices is for type: categorical, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.log and self.step:
            raise ValueError("log and step do not combine")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer low and high")
        return self

    def applies(self, cell: dict) -> bool:
        for key, wanted in (self.when or {}).items():
            if cell[key] not in (wanted if isinstance(wanted, list) else [wanted]):
                return False
        return True

    def suggest(self, trial, name: str):
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list:
        """Every value a grid sampler visits (categoricals, ints, floats with a step)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError("the grid sampler needs a step (or choices) for float parameters")
        count = int(round((self.high - self.low) / self.step)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class Objective(_Strict):
    metric: Literal["val_mIoU", "mIoU", "latency_ms", "gmacs", "params_m"]
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _default_direction(self):
        if self.direction is None:
            self.direction = METRICS[self.metric]
        return self


class SamplerSpec(_Strict):
    name: Literal["tpe", "grid", "nsga2", "random"] = "tpe"
    seed: int | None = 0
    #: TPE / NSGA-II keyword arguments (n_startup_trials, population_size, multivariate, ...)
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(_Strict):
    name: Literal["median", "hyperband", "none"] = "none"
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    min_resource: int = Field(default=1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


class SearchSpec(_Strict):
    space: dict[str, ParamSpec] = Field(min_length=1)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="val_mIoU")], min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: int = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    #: run the suite's own values of the searched keys first (the baseline to beat)
    enqueue_defaults: bool = True

    @field_validator("space")
    @classmethod
    def _paths(cls, space):
        for key in space:
            parts = key.split(".")
            if parts[0] not in SECTIONS or len(parts) < 2 or not all(parts):
                raise ValueError(f"space key {key!r} must be a dotted path into a cell's "
                                 f"{', '.join(SECTIONS)} settings, e.g. train.lr")
        return space

    @model_validator(mode="after")
    def _combinations(self):
        if self.pruner.name != "none" and len(self.objectives) > 1:
            raise ValueError("Optuna's pruners do not support several objectives; use "
                             "pruner: {name: none} with a multi-objective search")
        if self.sampler.name == "grid":
            for key, param in self.space.items():
                if param.when:
                    raise ValueError(f"space.{key}: the grid sampler cannot follow a "
                                     f"conditional (when:) parameter")
                try:
                    param.grid_values()
                except ValueError as exc:
                    raise ValueError(f"space.{key}: {exc}") from None
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"an objective is listed twice: {metrics}")
        return self

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def set_path(config: dict, dotted: str, value: Any) -> None:
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_path(config: dict, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
