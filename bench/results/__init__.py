"""Results: where finished work goes and is read back.

``store.py``: the cell store on an Optuna storage (a journal file by default, PostgreSQL or
SQLite by URL); one trial per cell, claimed by one worker, its result kept as user attributes,
so nothing finished is lost when a process dies. ``tracking.py``: live TensorBoard scalars
and Optuna intermediate values. Contract: imports only ``config`` (a cell's typed view);
``run`` writes here, ``reporting`` and ``diagnostics`` read.
"""
