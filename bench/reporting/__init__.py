"""Reporting: stored cells -> ``reports/<suite>/README.md`` with tables, statistics
(``stats.py`` on scipy.stats, ``comparisons.py``, ``summary.py``) and PNG plots (``plots.py``);
the sections for profiles, init weights and searches; the model-zoo report.

Contract: reads the store and the suite; never trains or measures, so a report can be
regenerated at any time (``ssmbench report``) and gives the same text for the same store.
"""
