"""Diagnostics for a user's machine: ``ssmbench doctor`` (environment, scan backends, CUDA,
storage) and ``python -m bench.diagnostics.gpu_check`` (the one-command GPU check).

Contract: reads and measures; changes no store and no report.
"""
