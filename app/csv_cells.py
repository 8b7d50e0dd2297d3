"""Spreadsheet-safe CSV cells, against formula ("CSV") injection.

A spreadsheet that opens a CSV file runs a cell beginning with ``=``, ``+``, ``-`` or ``@``
as a formula, and some also strip a leading tab or carriage return first. A prompt typed at
the kiosk such as ``=HYPERLINK("http://evil","click")`` would become a live formula in the
curator's spreadsheet. Following OWASP's CSV-injection guidance, every CSV Bildwerk writes
passes its cells through :func:`safe_cell`, which prefixes such a text cell with one ``'``
so that spreadsheets show it as text.

- Only ``str`` cells change. Numbers stay numbers: the integer ``-2`` is written as ``-2``,
  the text ``"-2"`` as ``'-2``.
- The escape is reversible. A text that already begins with quotes followed by a formula
  character gains one more quote, and :func:`restore_cell` removes exactly one, so
  Bildwerk's own CSV readers (training datasets) get the exact text back.
- JSON and JSON Lines exports are never escaped; they keep the exact text.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """``value`` as a CSV cell that no spreadsheet runs as a formula.

    Args:
        value (`Any`): the cell. Only a `str` beginning (after any ``'``) with one of
            ``FORMULA_STARTS`` changes: it gains a leading ``'``. Anything else, numbers
            included, is returned as it is.
    """
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_STARTS):
        return "'" + value
    return value


def restore_cell(value):
    """The text :func:`safe_cell` was given: the inverse, for reading our CSV back."""
    if (isinstance(value, str) and value.startswith("'")
            and value.lstrip("'").startswith(FORMULA_STARTS)):
        return value[1:]
    return value
