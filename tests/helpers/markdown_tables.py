"""Pipe tables of a markdown text, checked the way a renderer sees them: markdown-it (the
CommonMark parser with the GFM table rule) must find every table the source contains, and every
row must have the header's number of cells (a renderer silently drops or pads the others)."""
import re

from markdown_it import MarkdownIt

CELL_SPLIT = re.compile(r"(?<!\\)\|")


def source_tables(text: str) -> list[list[str]]:
    """Blocks of consecutive lines that start with ``|`` (outside code fences)."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            current.append(line.strip())
            continue
        if current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def cell_count(row: str) -> int:
    """Cells of a pipe-table row: the unescaped ``|`` split it, outer pipes excepted."""
    return len(CELL_SPLIT.split(row.strip().strip("|"))) if row.strip("| ") else 0


def table_problems(text: str) -> list[str]:
    """What would not render as the table the source means; [] when every table is sound."""
    problems = []
    blocks = source_tables(text)
    parsed = [t for t in MarkdownIt("commonmark").enable("table").parse(text)
              if t.type == "table_open"]
    if len(parsed) != len(blocks):
        problems.append(f"{len(blocks)} tables in the source, {len(parsed)} parsed")
    for block in blocks:
        widths = [cell_count(row) for row in block]
        if len(set(widths)) != 1:
            problems.append(f"rows with {sorted(set(widths))} cells in the table starting "
                            f"{block[0][:80]!r}")
    return problems
