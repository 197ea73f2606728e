"""Every committed report renders: each markdown table under reports/*/README.md is found by
markdown-it (CommonMark with the GFM table rule) and every row has the header's number of
cells; no Python repr (a dict or list literal) leaks into the prose."""
import re
from pathlib import Path

import pytest

from tests.helpers.markdown_tables import source_tables, table_problems

REPORTS = sorted((Path(__file__).resolve().parents[2] / "reports").glob("*/README.md"))


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.parent.name)
def test_every_table_of_a_committed_report_parses_with_equal_rows(path):
    text = path.read_text()
    assert table_problems(text) == [], path


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.parent.name)
def test_no_python_repr_in_a_committed_report(path):
    prose = "\n".join(line for line in path.read_text().splitlines()
                      if not line.lstrip().startswith(("|", "```", "    ")))
    assert not re.search(r"\{'[^']*': ", prose), path


def test_the_check_catches_the_broken_per_class_header():
    broken = ("| fusion | background | yellow_low|cyan_high |\n"
              "|:--|--:|--:|\n"
              "| add | 90.1 | 50.2 |\n")
    assert len(source_tables(broken)) == 1
    assert table_problems(broken)
    assert table_problems(broken.replace("low|cyan", "low\\|cyan")) == []
