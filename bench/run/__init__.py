"""Running a suite: the preflight (every model built and run on the data's first items before
any training), the cell queue and its workers (``runner.py``), one cell from data to stored
result (``train.py``), init weights (``checkpoints.py``), torchrun (``distributed.py``) and the
Optuna search over the same cells (``search.py``).

Contract: the only package that trains. It takes a ``config.Suite``, writes each finished cell
to ``results.store`` and asks ``reporting`` for the report at the end; a killed run resumes
from the store and its checkpoints and ends where an uninterrupted run would.
"""
