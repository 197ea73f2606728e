"""Profiling: what one model costs. Parameters, FLOPs in each convention (kernels/flops.py),
latency and throughput, memory and where the time goes (``profiler.profile_model``); the
machine fingerprint (``machine.py``); latency reproducibility across processes
(``latency_repro.py``) and the scan-kernel sweep (``kernel_sweep.py``).

Contract: measures a model it is given; trains nothing. Specs come from ``config.schema``;
results are plain dicts the store keeps.
"""
