"""Markdown for the generated reports: tables whose every cell is escaped so that each row keeps
the header's number of cells (GitHub-flavoured markdown splits rows on unescaped ``|``), and
numbers to a few significant digits."""
from __future__ import annotations

import math

import pandas as pd


def significant(value, digits: int = 3) -> str:
    """``digits`` significant digits without exponent notation; "–" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def escape_cell(value):
    """A table cell that cannot split its row: ``|`` escaped (class names such as
    ``yellow_low|cyan_high``), line breaks flattened."""
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\n", " ")
    return value


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub-flavoured markdown of ``frame`` (no index) whose every row has the header's number
    of cells."""
    frame = frame.map(escape_cell)
    frame.columns = [escape_cell(str(c)) for c in frame.columns]
    return frame.to_markdown(index=False)
