"""The ssmbench harness, in packages along the data flow (docs/architecture.md):

    config      suite YAML -> validated Suite and its cells
    data        datasets in their native layouts, transforms, corruptions, converters
    run         preflight, the cell queue, training, init weights, torchrun, Optuna search
    evaluation  metrics (pure functions) and the papers' inference protocols
    profiling   parameters, FLOPs, latency, memory; the kernel sweep
    results     the cell store (Optuna storage) and live tracking
    reporting   stored cells -> reports/<suite>/README.md, tables, statistics, plots
    diagnostics ssmbench doctor, the GPU check

The names below are the public API for scripts and notebooks; they load on first use, so
``import bench`` stays cheap.
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "load_suite": "bench.config.suite",
    "Suite": "bench.config.suite",
    "SuiteError": "bench.config.yaml_source",
    "run_suite": "bench.run.runner",
    "run_search": "bench.run.search",
    "preflight": "bench.run.preflight",
    "CellStore": "bench.results.store",
    "profile_model": "bench.profiling.profiler",
    "write_report": "bench.reporting.suite_report",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
