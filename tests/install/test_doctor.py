"""`bildwerk doctor` prints what a bug report needs and says when the installed packages
differ from the lock."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path, monkeypatch, embedded_template):
    data = tmp_path / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(data))
    monkeypatch.setenv("BILDWERK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("BILDWERK_EMBEDDED_MODEL_ID", "bildwerk-tiny")
    monkeypatch.setenv("BILDWERK_DEVICE", "cpu")
    for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "HF_TOKEN", "BILDWERK_OPENAI_API_KEY",
                 "BILDWERK_GEMINI_API_KEY", "BILDWERK_HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def doctor(*args: str):
    return CliRunner().invoke(cli, ["doctor", *args])


def test_doctor_reports_versions_device_storage_providers_and_a_matching_lock(env):
    result = doctor()
    assert result.exit_code == 0, result.output
    out = result.output
    for label in ("python", "torch", "diffusers", "transformers", "peft"):
        assert f"\n  {label} " in out
    import diffusers
    import torch

    assert torch.__version__ in out and diffusers.__version__ in out
    assert "selected" in out and "cpu" in out
    assert str((env / "data").resolve()) in out and str((env / "models").resolve()) in out
    assert "migration head  0008" in out
    assert "local   usable" in out
    assert "openai  not usable: OPENAI_API_KEY not set" in out
    assert "gemini  not usable: GEMINI_API_KEY not set" in out
    assert "matches the lock" in out


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_doctor_hides_the_database_password_and_shows_the_migration_state(
        env, monkeypatch, database_url):
    with_password = database_url.replace("://", "://postgres:hunter2@", 1) \
        if "@" not in database_url else database_url.replace("@", ":hunter2@", 1)
    monkeypatch.setenv("BILDWERK_DATABASE_URL", with_password)
    result = doctor()
    assert "hunter2" not in result.output
    assert "postgres:***@" in result.output
    assert "database at     empty (no migration applied)" in result.output


def test_doctor_says_clearly_when_installed_versions_differ_from_the_lock(env, tmp_path):
    lock = tmp_path / "lock"
    lock.mkdir()
    for name in ("runtime.txt", "test.txt"):
        text = (ROOT / "requirements" / name).read_text()
        import fastapi

        (lock / name).write_text(text.replace(f"fastapi=={fastapi.__version__}",
                                              "fastapi==0.1.0"))
    result = doctor("--lock", str(lock))
    assert result.exit_code == 1, result.output
    assert "DIFFERS from the lock in 1 of" in result.output
    assert "fastapi" in result.output and "locked 0.1.0" in result.output
