"""deploy/compose.yaml names only settings Bildwerk has, and wires the services it uses
(the file itself is checked with `docker compose config` by hand: docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def test_every_bildwerk_variable_in_the_compose_file_is_a_setting():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    env = services["bildwerk"]["environment"]
    known = {f"BILDWERK_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("BILDWERK_") and k not in known)
    assert unknown == []
    assert env["BILDWERK_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["BILDWERK_BLOB_STORE"].startswith("s3://")
    assert {"postgres", "minio", "bucket"} <= set(services)
    assert set(services["bildwerk"]["depends_on"]) == {"postgres", "bucket"}
