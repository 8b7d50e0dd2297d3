"""Fixtures for the Blender add-on tests: a Blender to run (Debian's ``blender``, or the
``bpy`` wheel's Python), the add-on zip built as users get it, and a live Bildwerk.

Which Blender:

- ``BILDWERK_BLENDER``: a Blender binary (``blender -b ... --python script.py``);
- ``BILDWERK_BPY_PYTHON``: a Python with the ``bpy`` wheel installed (``python script.py``);
- else ``blender`` on the PATH (``scripts/blender-setup`` installs Debian's).

Without any, the tests skip and say so (under ``CI=true`` they fail: CI runs
``scripts/blender-setup`` first). The Blender side of each test is a script in
``tests/blender/scripts/`` that writes a JSON report; the tests assert on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.utils.server import ROOT, Server

SCRIPTS = Path(__file__).parent / "scripts"
CLIENT_DIR = ROOT / "clients" / "blender"


@dataclass
class BlenderRuntime:
    kind: str  # "binary" or "bpy"
    path: str
    version: str = "?"

    def command(self, script: Path, args: list[str]) -> list[str]:
        if self.kind == "bpy":
            return [self.path, str(script), "--", *args]
        return [self.path, "-b", "--factory-startup", "--python-exit-code", "1",
                "--python", str(script), "--", *args]


def find_blender() -> tuple[BlenderRuntime | None, str]:
    """The Blender to test with, or None and why there is none."""
    explicit = os.environ.get("BILDWERK_BLENDER")
    if explicit:
        found = shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
        if not found:
            return None, f"BILDWERK_BLENDER={explicit} is not a file"
        return BlenderRuntime("binary", found), ""
    bpy_python = os.environ.get("BILDWERK_BPY_PYTHON")
    if bpy_python:
        if not Path(bpy_python).is_file():
            return None, f"BILDWERK_BPY_PYTHON={bpy_python} is not a file"
        return BlenderRuntime("bpy", bpy_python), ""
    found = shutil.which("blender")
    if found:
        return BlenderRuntime("binary", found), ""
    return None, ("no Blender: install one (scripts/blender-setup installs Debian's), or set "
                  "BILDWERK_BLENDER to a blender binary or BILDWERK_BPY_PYTHON to a Python "
                  "with the bpy wheel")


def _version(runtime: BlenderRuntime) -> str:
    try:
        if runtime.kind == "bpy":
            out = subprocess.run([runtime.path, "-c", "import bpy; print(bpy.app.version_string)"],
                                 capture_output=True, text=True, timeout=120).stdout
            return out.strip().splitlines()[-1] if out.strip() else "?"
        out = subprocess.run([runtime.path, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
        match = re.search(r"Blender (\S+)", out)
        return match.group(1) if match else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


@pytest.fixture(scope="session")
def blender() -> BlenderRuntime:
    runtime, why = find_blender()
    if runtime is None:
        if os.environ.get("CI"):  # CI must run them: scripts/blender-setup installs Blender
            pytest.fail(why)
        pytest.skip(why)
    runtime.version = _version(runtime)
    return runtime


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip users install, built by clients/blender/build.py."""
    out = tmp_path_factory.mktemp("addon-dist")
    result = subprocess.run([sys.executable, str(CLIENT_DIR / "build.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=60, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Live:
    server: Server
    admin: str  # an admin key's secret (Merge needs admin)
    loras: list[str]

    @property
    def url(self) -> str:
        return self.server.base

    def get(self, path: str, **params) -> dict:
        r = self.server.get(path, params=params,
                            headers={"Authorization": f"Bearer {self.admin}"})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path):
    """``bildwerk serve`` on the embedded tiny model, with two tiny LoRAs and an admin key.
    Keyless loopback calls get 401, as a Blender on another machine would."""
    from app.persistence.database import Database
    from app.security.keys import ApiKeyRepository
    from tests.utils.loras import write_tiny_lora

    root = tmp_path_factory.mktemp("blender-server")
    data = root / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    (root / "models").mkdir()
    write_tiny_lora(embedded_template, root / "models" / "loras", "style", seed=3)
    server = Server(data, root / "models", BILDWERK_EMBEDDED_MODEL_ID="bildwerk-tiny",
                    BILDWERK_LOOPBACK_SCOPES="none").start()
    # Every request is an access-log line: read them, or the pipe fills and the server
    # blocks on its next log write.
    drain = threading.Thread(target=server.proc.stdout.read, daemon=True)
    drain.start()
    db = Database(f"sqlite:///{(data / 'bildwerk.db').resolve()}")
    try:
        _, admin = ApiKeyRepository(db).create("blender-tests", ["admin"])
        loras = [item["id"] for item in server.get(
            "/loras", headers={"Authorization": f"Bearer {admin}"}).json()]
        yield Live(server, admin, sorted(loras))
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)
        drain.join(10)
        db.dispose()


@dataclass
class BlenderRun:
    report: dict
    log: str
    returncode: int

    def failed_checks(self) -> list[str]:
        return [f"{c['name']}: {c['detail']}" for c in self.report.get("checks", [])
                if not c["ok"]]

    def check(self, name: str) -> dict:
        found = [c for c in self.report.get("checks", []) if c["name"] == name]
        assert found, f"the Blender script ran no check {name!r}; log tail:\n{self.log[-3000:]}"
        return found[0]


def run_blender(runtime: BlenderRuntime, script: str, args: list[str], workdir: Path,
                timeout: float = 600) -> BlenderRun:
    """Run ``tests/blender/scripts/<script>`` in Blender with a fresh home (so the add-on
    is installed into an empty user config, as on a new machine)."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    report = workdir / f"{Path(script).stem}-report.json"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    for name in ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_RESOURCES",
                 "BLENDER_USER_DATAFILES", "BLENDER_USER_EXTENSIONS", "PYTHONPATH"):
        env.pop(name, None)
    command = runtime.command(SCRIPTS / script, ["--report", str(report), *args])
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout, errors="replace")
    log = proc.stdout + proc.stderr
    (workdir / f"{Path(script).stem}.log").write_text(log)
    if not report.is_file():
        raise AssertionError(f"{script} wrote no report (exit {proc.returncode}); log:\n"
                             f"{log[-6000:]}")
    return BlenderRun(json.loads(report.read_text()), log, proc.returncode)
