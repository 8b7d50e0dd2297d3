"""Fixtures for the reliability tests that run a real server process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.utils.server import Server


@pytest.fixture
def data_dir(tmp_path: Path, embedded_template: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    (tmp_path / "models").mkdir()
    return data


@pytest.fixture
def servers(data_dir: Path):
    started: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(data_dir, data_dir.parent / "models", **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
