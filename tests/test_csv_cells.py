"""app/csv_cells.py: text that a spreadsheet would run as a formula gains a leading `'`;
numbers and harmless text do not change, and the escape can be undone exactly."""

from __future__ import annotations

import pytest

from app.csv_cells import restore_cell, safe_cell

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_text_starting_with_a_formula_character_is_quoted(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", [-2, -0.5, 3, None, "a lake", "", "'", "x=1", " =1"])
def test_numbers_and_harmless_text_are_unchanged(value):
    assert safe_cell(value) == value


@pytest.mark.parametrize("text", [*FORMULAS, "'=1", "''-2", "'quoted'", "plain", ""])
def test_restore_gives_back_the_exact_text(text):
    assert restore_cell(safe_cell(text)) == text


def test_a_quoted_formula_gains_one_more_quote_so_it_reads_back_exactly():
    assert safe_cell("'=1") == "''=1"
    assert restore_cell("'=1") == "=1"  # what a spreadsheet-safe `=1` looks like
