"""`bildwerk prompts N --out FILE`: appends expanded prompts like the seed tool's
`main.py N --only-prompts`, and records every batch."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from app.persistence.database import Database
from app.persistence.records import RecordFilter, RecordRepository


@pytest.fixture
def env(tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BILDWERK_DATABASE_URL", database_url)
    monkeypatch.setenv("BILDWERK_PROMPT_PROVIDER", "local")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str):
    result = CliRunner().invoke(cli, ["prompts", *args])
    assert result.exit_code == 0, result.output
    return result


def rows(path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_prompts_are_appended_to_an_existing_csv(env):
    out = env / "batch_prompts.csv"
    run("3", "--out", str(out), "--seed", "1")
    first = rows(out)
    assert first[0] == ["title", "description", "metatags", "prompt"]
    assert len(first) == 4
    run("2", "--out", str(out), "--seed", "50")
    second = rows(out)
    assert second[:4] == first  # nothing rewritten
    assert len(second) == 6 and second.count(first[0]) == 1  # one header
    assert all(row[0] and row[3] for row in second[1:])
    assert len({row[3] for row in second[1:]}) == 5  # a new idea per prompt


def test_an_idea_and_style_are_expanded_the_same_way_as_the_api(env):
    out = env / "wish.csv"
    run("5", "--out", str(out), "--idea", "ein See mitten in Olpe", "--style",
        "satellite-map", "--seed", "1")
    prompts = [row[3] for row in rows(out)[1:]]
    assert len(prompts) == 5
    assert all(p.startswith("a lake in the middle of Olpe") for p in prompts)
    settings = Settings(_env_file=None)
    db = Database(settings.resolved_database_url)
    try:
        records, total = RecordRepository(db).list(RecordFilter(endpoint="prompt-expand"))
    finally:
        db.dispose()
    assert total == 1 and records[0].prompt == "ein See mitten in Olpe"
    assert [p["prompt"] for p in records[0].result["prompts"]] == prompts
    assert records[0].client["host"] == "cli"


def test_jsonl_output_and_a_foreign_csv_is_not_touched(env):
    out = env / "p.jsonl"
    run("2", "--out", str(out), "--seed", "3")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and {"title", "prompt", "metatags"} <= set(lines[0])
    foreign = env / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(cli, ["prompts", "1", "--out", str(foreign)])
    assert result.exit_code == 2 and "header" in result.output
    assert foreign.read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("idea", ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)"])
def test_a_formula_idea_is_neutralised_in_the_csv_and_exact_in_jsonl(env, idea):
    out, exact = env / "wish.csv", env / "wish.jsonl"
    run("2", "--out", str(out), "--idea", idea, "--seed", "1")
    run("2", "--out", str(exact), "--idea", idea, "--seed", "1")
    cells = [row[3] for row in rows(out)[1:]]
    prompts = [json.loads(line)["prompt"] for line in exact.read_text().splitlines()]
    assert len(cells) == 2 and all(p.startswith(idea) for p in prompts)
    assert cells == ["'" + p for p in prompts]
    assert all(row[0].startswith("'") and row[1].startswith("'") for row in rows(out)[1:])
