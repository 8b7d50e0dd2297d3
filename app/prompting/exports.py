"""Prompt batches as files: CSV with the columns title, description, metatags, prompt,
and JSON Lines with every field. ``append_csv`` adds rows to an existing file, writing the
header only to a new or empty file.

CSV cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR
first) are prefixed with ``'`` (:func:`app.csv_cells.safe_cell`); JSON Lines keep the
exact text."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from app.csv_cells import safe_cell

CSV_COLUMNS = ("title", "description", "metatags", "prompt")


def _csv_row(item: Mapping) -> list[str]:
    tags = item.get("metatags") or []
    cells = [str(item.get("title", "")), str(item.get("description", "")),
             ", ".join(tags) if isinstance(tags, list) else str(tags), str(item.get("prompt", ""))]
    return [safe_cell(cell) for cell in cells]


def to_csv(items: Iterable[Mapping], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow(_csv_row(item))
    return buf.getvalue()


def to_jsonl(items: Iterable[Mapping]) -> str:
    return "".join(json.dumps(dict(item), ensure_ascii=False) + "\n" for item in items)


def append_csv(path: Path, items: Iterable[Mapping]) -> int:
    """Append ``items`` to ``path`` (created with a header if missing or empty); returns
    the number of rows written. An existing file must have the seed's header."""
    items = list(items)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="", encoding="utf-8") as fh:
            first = next(csv.reader(fh), [])
        if tuple(c.strip().lower() for c in first) != CSV_COLUMNS:
            raise ValueError(f"{path} does not start with the header {','.join(CSV_COLUMNS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as fh:
        fh.write(to_csv(items, header=new))
    return len(items)


def append_jsonl(path: Path, items: Iterable[Mapping]) -> int:
    items = list(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(to_jsonl(items))
    return len(items)
