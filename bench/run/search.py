"""`ssmbench search SUITE`: Optuna hyperparameter search over a suite's ``search:`` block.

The search is an Optuna study in the suite's store (bench/results/store.py), named after the suite.
Each trial is a cell: its parameters are applied to the suite's resolved cell configuration,
the result gets the cell id (hash of that configuration) and label, and it runs through the
runner's ``run_one`` like a grid cell, with the same checkpoints, resume, failure records,
heartbeats and stale-worker retries. Per-validation val mIoU goes to ``trial.report`` and the
pruner (median / Hyperband) may stop the cell; the finished cell's objective values (val mIoU,
latency, GMACs, ...) complete the trial. ``--workers N`` and ``--storage postgresql://...``
spread trials over processes and machines, as for ``run``; the budget ``n_trials`` counts
trials over all workers, ``timeout`` is per worker (as Optuna's ``optimize``).

The suite's own values of the searched keys run first (``enqueue_defaults``): the baseline
the report compares the best trial with.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.config.schema import EvalSpec, ProfileSpec, TrainSpec
from bench.config.search_space import get_path, set_path
from bench.config.suite import Suite, cell_id, cell_label, load_suite
from bench.results.store import CellStore, StoreError
from bench.run import distributed
from bench.run.runner import drain, follow

log = logging.getLogger("ssmbench")

ARCH = "arch"  # the categorical parameter choosing the trial's model/size/fusion


@dataclass
class SearchOutcome:
    suite: str
    ran: int
    trials: int
    report: Path | None = None


# ---------------------------------------------------------------------------- the plan


class SearchPlan:
    """A suite's search: its base cells (one per model/size/fusion), the space, and how a
    trial's parameters become a cell configuration."""

    def __init__(self, suite: Suite):
        spec = suite.spec.search
        if spec is None:
            raise suite.error("this suite has no search: block (see bench/config/search_space.py)",
                              ())
        self.suite, self.spec = suite, spec
        grid = suite.spec.grid
        if len(grid.datasets) != 1:
            raise suite.error("a search tunes on one dataset: give grid.datasets one entry",
                              ("grid", "datasets"))
        if len(grid.seeds) != 1:
            raise suite.error("a search trains one seed per trial: give grid.seeds one value",
                              ("grid", "seeds"))
        metrics = [o.metric for o in spec.objectives]
        stages = suite.spec.stages
        if "train" not in stages:
            raise suite.error("a search trains its trials: stages must include train",
                              ("stages",))
        if "val_mIoU" in metrics and not suite.spec.train.val_every:
            raise suite.error("the val_mIoU objective needs train.val_every > 0 (validations "
                              "also feed the pruner)", ("train", "val_every"))
        if spec.pruner.name != "none" and not suite.spec.train.val_every:
            raise suite.error("a pruner needs per-validation values: set train.val_every",
                              ("search", "pruner"))
        if "mIoU" in metrics and "eval" not in stages:
            raise suite.error("the mIoU objective needs the eval stage", ("stages",))
        if {"latency_ms", "gmacs", "params_m"} & set(metrics) and "profile" not in stages:
            raise suite.error(f"objectives {metrics} need the profile stage", ("stages",))
        self.base = {_arch(c): c for c in suite.cells()}
        for key, param in spec.space.items():
            for cell in self.base.values():
                if param.applies(cell) and get_path(cell, key) is None and \
                        key.split(".")[1] not in ("model_kwargs", "augment"):
                    raise suite.error(f"{key!r} is not a setting of the cells "
                                      f"(known: {', '.join(sorted(cell[key.split('.')[0]]))})",
                                      ("search", "space", key))

    @property
    def archs(self) -> list[str]:
        return list(self.base)

    def fingerprint(self) -> str:
        """What the study's trials mean (cells, space, objectives): changing them needs
        --fresh or a new name. The budget, sampler and pruner may change between runs."""
        blob = json.dumps([sorted(self.base), [c["id"] for c in self.base.values()],
                           self.spec.model_dump(mode="json", include={"space", "objectives"})],
                          sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict:
        """Draw the trial's parameters (define-by-run: conditional ones only where they apply)
        and return its resolved cell configuration."""
        arch = trial.suggest_categorical(ARCH, self.archs) if len(self.base) > 1 \
            else self.archs[0]
        config = copy.deepcopy(self.base[arch])
        for key, param in self.spec.space.items():
            if param.applies(config):
                set_path(config, key, param.suggest(trial, key))
        return self.finish(config)

    def finish(self, config: dict) -> dict:
        for section, model in (("train", TrainSpec), ("eval", EvalSpec),
                               ("profile", ProfileSpec)):
            config[section] = model.model_validate(config[section]).model_dump()
        config.pop("id", None)
        config.pop("label", None)
        config["id"] = cell_id(config)
        config["label"] = cell_label(config)
        return config

    def default_params(self) -> list[dict]:
        """Per base cell, the suite's own values of the searched keys (the baseline)."""
        out = []
        for arch, cell in self.base.items():
            params = {ARCH: arch} if len(self.base) > 1 else {}
            for key, param in self.spec.space.items():
                value = get_path(cell, key)
                if param.applies(cell) and value is not None:
                    params[key] = value
            out.append(params)
        return out

    def sampler(self, worker: int = 0, stored: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler of worker number ``worker`` opening a study that holds ``stored``
        trials: its seed is drawn from (the suite's seed, worker, stored), so workers draw
        different trials, and a resumed search continues with new draws instead of replaying
        the first run's (which would re-ask configurations already run)."""
        s = self.spec.sampler.model_copy()
        if s.seed is not None:
            words = [s.seed & 0xFFFFFFFF, worker, stored]
            s.seed = int(np.random.SeedSequence(words).generate_state(1)[0])
        if s.name == "grid":
            space = {key: p.grid_values() for key, p in self.spec.space.items()}
            if len(self.base) > 1:
                space[ARCH] = self.archs
            return optuna.samplers.GridSampler(space, seed=s.seed)
        if s.name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=s.seed, **s.options)
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=s.seed)
        return optuna.samplers.TPESampler(seed=s.seed, **s.options)

    def pruner(self) -> optuna.pruners.BasePruner:
        p = self.spec.pruner
        if p.name == "median":
            return optuna.pruners.MedianPruner(p.n_startup_trials, p.n_warmup_steps,
                                               p.interval_steps)
        if p.name == "hyperband":
            return optuna.pruners.HyperbandPruner(p.min_resource, p.max_resource,
                                                  p.reduction_factor)
        return optuna.pruners.NopPruner()

    def values(self, result: dict) -> list[float]:
        """The objective values of a finished cell, in the order of ``objectives``."""
        out = []
        for objective in self.spec.objectives:
            value = objective_value(result, objective.metric)
            if value is None or value != value:
                raise ValueError(f"objective {objective.metric} is missing from the cell's "
                                 f"result")
            out.append(float(value))
        return out


def _arch(cell: dict) -> str:
    return f"{cell['model']}/{cell['size']}/{cell['fusion']}"


def objective_value(result: dict, metric: str) -> float | None:
    if metric == "val_mIoU":
        history = (result.get("history") or {}).get("val_mIoU") or []
        return history[-1] if history else None
    if metric == "mIoU":
        return ((result.get("metrics") or {}).get("clean") or {}).get("mIoU")
    profile = result.get("profile") or {}
    if metric == "latency_ms":
        return profile.get("latency_ms_median")
    if metric == "gmacs":
        return profile.get("gmacs_published", profile.get("gmacs_full"))
    return profile.get(metric)


# ---------------------------------------------------------------------------- the loop


def open_study(plan: SearchPlan, name: str, storage: str | None, runs_dir,
               fresh: bool = False, worker: int = 0) -> CellStore:
    store = CellStore(name, storage, runs_dir, directions=plan.spec.directions)
    if fresh:
        store.reset()
    store.study.sampler = plan.sampler(worker, len(store.study.get_trials(deepcopy=False)))
    store.study.pruner = plan.pruner()
    stored = store.study.user_attrs.get("search_fingerprint")
    if stored is None:
        store.study.set_user_attr("search_fingerprint", plan.fingerprint())
        store.study.set_user_attr("objectives", [o.metric for o in plan.spec.objectives])
        if plan.spec.enqueue_defaults and not store.study.trials:
            for params in plan.default_params():
                store.study.enqueue_trial(params, user_attrs={"default": True},
                                          skip_if_exists=True)
    elif stored != plan.fingerprint():
        raise StoreError(f"the search of suite {name!r} changed since it last ran (its space, "
                         f"objectives, sampler or cells); re-run with --fresh to discard the "
                         f"stored trials ({store.dir}), or give the suite a new name")
    return store


def retry_failed(store: CellStore) -> int:
    """A new `search` run retries failed trials once, as `run` retries failed cells: each gets
    a WAITING copy with the same parameters."""
    trials = store.study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    count = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried and \
                "duplicate_of" not in t.user_attrs:
            count += store.requeue(t)
    return count


def budget_left(store: CellStore, n_trials: int) -> int:
    """Configurations still to start: ``n_trials`` counts distinct cells (configurations)
    started, so a retry (same cell) or a dropped duplicate draw is not counted."""
    started = {t.user_attrs["cell_id"] for t in store.trials() if t.state != TrialState.WAITING}
    return n_trials - len(started)


#: draws in a row that may repeat a stored configuration before a worker stops asking (a small
#: discrete space that is used up)
MAX_DUPLICATE_DRAWS = 20


def _taken(store: CellStore, cell_id: str, number: int) -> FrozenTrial | None:
    """Another trial of the same configuration that was there first (lower number: two
    workers drawing one configuration at once keep the first) or is finished; a FAIL is
    retried, not re-asked."""
    for t in store.trials():
        if t.user_attrs["cell_id"] == cell_id and t.number != number and \
                t.state != TrialState.FAIL and \
                (t.number < number or t.state.is_finished()):
            return t
    return None


def make_asker(plan: SearchPlan, store: CellStore, timeout: float | None):
    """``ask()`` for the runner's drain loop: the next trial as a claimed cell, or None when
    the budget or this worker's time is spent."""
    deadline = time.time() + timeout if timeout else None

    def ask():
        if deadline is not None and time.time() > deadline:
            return None
        waiting = store.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and budget_left(store, plan.spec.n_trials) <= 0:
            return None
        sampler = store.study.sampler
        if not waiting and isinstance(sampler, optuna.samplers.GridSampler) and \
                sampler.is_exhausted(store.study):  # optimize() stops there too
            return None
        for _ in range(MAX_DUPLICATE_DRAWS):
            # Optuna's ask() pops a queued trial (the defaults, retries) atomically
            trial = store.study.ask()
            queued = trial.user_attrs.get("config")
            config = queued or plan.suggest(trial)
            for key, value in (("cell_id", config["id"]), ("label", config["label"]),
                               ("config", config)):
                trial.set_user_attr(key, value)
            twin = None if queued else _taken(store, config["id"], trial.number)
            if twin is None:
                return store.hold(store.trial_id(trial.number), trial.number, config, trial)
            # the sampler drew a configuration already run or running: it is not run again
            # and not counted; PRUNED (not FAIL) tells the sampler to look elsewhere
            trial.set_user_attr("duplicate_of", twin.number)
            store.study.tell(trial, state=TrialState.PRUNED)
        log.warning("search %s: %d draws in a row repeated stored configurations; this worker "
                    "stops", store.suite_name, MAX_DUPLICATE_DRAWS)
        return None

    return ask


def make_hooks(plan: SearchPlan, store: CellStore):
    """run_one's keyword arguments for a claimed trial: report per-validation val mIoU and
    ask the pruner; the objective values."""
    single = len(plan.spec.objectives) == 1

    def on_claim(claim):
        live = []

        def on_validation(iteration: int, miou: float) -> bool:
            if not single:  # Optuna's report/prune are single-objective only
                return False
            if not live:
                live.append(claim.trial)
            trial = live[0]
            trial.report(miou, iteration)
            return trial.should_prune()

        return {"on_validation": on_validation, "values": plan.values}

    return on_claim


def search_loop(plan: SearchPlan, store: CellStore, progress: bool,
                timeout: float | None) -> int:
    completed, failed = drain(store, progress, None, ask=make_asker(plan, store, timeout),
                              on_claim=make_hooks(plan, store))
    for label, message in failed:
        if not message.startswith("pruned"):
            log.warning("trial %s failed: %s", label, message)
    return completed + len(failed)


def _search_worker(suite_path: str, set_values: list[str], storage: str | None, runs_dir: str,
                   name: str, timeout: float | None, worker: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    plan = SearchPlan(load_suite(suite_path, set_values, check_names=False))
    store = open_study(plan, name, storage, runs_dir, worker=worker)
    search_loop(plan, store, progress=False, timeout=timeout)


def run_search(suite: Suite, storage: str | None = None, fresh: bool = False,
               runs_dir: str | Path = "runs", reports_dir: str | Path = "reports",
               workers: int = 1, progress: bool = True, set_values: list[str] | None = None,
               n_trials: int | None = None, timeout: float | None = None,
               write_report: bool = True, worker_index: int = 0,
               preflight: bool = True) -> SearchOutcome:
    if n_trials is not None or timeout is not None:
        spec = suite.spec.search.model_copy(update={
            k: v for k, v in (("n_trials", n_trials), ("timeout", timeout)) if v is not None})
        suite.spec = suite.spec.model_copy(update={"search": spec})
    plan = SearchPlan(suite)
    name = suite.name
    if preflight and distributed.is_main():  # the base cells' models once on the data
        from bench.run.preflight import preflight as run_preflight

        print(run_preflight(suite, list(plan.base.values())).format(), flush=True)
    if distributed.init(suite.spec.train.device) and not distributed.is_main():
        try:
            follow()
        finally:
            distributed.shutdown()
        return SearchOutcome(name, 0, 0)
    try:
        store = open_study(plan, name, storage, runs_dir, fresh,
                           worker=worker_index * max(1, workers))
        retry_failed(store)
        store.fail_stale()
        limit = plan.spec.timeout
        if workers <= 1:
            ran = search_loop(plan, store, progress, limit)
        else:
            if distributed.active():
                raise StoreError("--workers and torchrun do not combine")
            ctx = mp.get_context("spawn")
            sets = list(set_values or [])
            if n_trials is not None:
                sets.append(f"search.n_trials={n_trials}")
            procs = [ctx.Process(target=_search_worker, args=(
                str(suite.path), sets, storage, str(runs_dir), name, limit,
                worker_index * workers + index))
                for index in range(workers)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            ran = -1
    finally:
        if distributed.active():
            distributed.broadcast_object(None)  # releases the other ranks' follow()
        distributed.shutdown()
    report = None
    if write_report:
        from bench.reporting.search_report import write_search_report

        report = write_search_report(plan, store, Path(reports_dir) / name)
    return SearchOutcome(name, ran, len(store.by_cell()), report)


__all__ = ["SearchPlan", "run_search"]
