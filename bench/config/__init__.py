"""Suite configuration: a suite YAML file (and ``--set`` overrides) -> a validated ``Suite`` and
its cells.

Contract: reads the suite file and checks dataset roots, nothing else; trains, profiles and
stores nothing. Every schema lives in ``schema.py``; every problem is a ``SuiteError`` naming
file, line and key path, collected and raised together (``yaml_source.raise_all``). Imports
``data`` (dataset registry, augment options), ``evaluation.protocols`` (protocol names),
``models`` (families, fusions) and ``kernels`` (FLOP conventions) only to check names.
"""
