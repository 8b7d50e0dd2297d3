"""The lock (requirements/*.txt) and pyproject.toml agree: a dependency added to one and
not the other, or a range the locked version falls outside of, fails here with the fix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIX = "run scripts/lock (or scripts/upgrade-deps) and commit requirements/"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def declared(extra: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def locked(name: str) -> dict[str, list[tuple[str, str | None, bool]]]:
    """{package: [(version, marker, has hashes, declared in pyproject.toml), ...]}."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, list] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.strip()):
        match = PIN.match(block.splitlines()[0])
        assert match, f"requirements/{name}: cannot read {block.splitlines()[0]!r}"
        pkg, version, marker = match.groups()
        entry = (version, marker, "--hash=sha256:" in block, "bildwerk (pyproject.toml)"
                 in block)
        pins.setdefault(canonicalize_name(pkg), []).append(entry)
    return pins


@pytest.mark.parametrize(("lock", "extra"), [("runtime.txt", None), ("test.txt", "test")])
def test_every_declared_dependency_is_locked_within_its_range(lock, extra):
    pins = locked(lock)
    for name, req in declared(extra).items():
        if name == "torch":  # installed per machine (CPU/CUDA), never locked
            assert name not in pins, f"torch must not be in requirements/{lock}: {FIX}"
            continue
        assert name in pins, f"{name} is in pyproject.toml but not in requirements/{lock}: {FIX}"
        for version, _marker, _hashes, _direct in pins[name]:
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements/{lock} pins {name}=={version}, outside pyproject.toml's "
                f"{req}: {FIX}")


@pytest.mark.parametrize(("lock", "extra"), [("runtime.txt", None), ("test.txt", "test")])
def test_nothing_is_locked_as_direct_that_pyproject_no_longer_declares(lock, extra):
    wanted = set(declared(extra))
    direct = {name for name, entries in locked(lock).items() if any(e[3] for e in entries)}
    stale = sorted(direct - wanted)
    assert not stale, f"requirements/{lock} still lists {stale} as declared: {FIX}"


@pytest.mark.parametrize("lock", ["runtime.txt", "test.txt"])
def test_every_locked_package_is_pinned_with_hashes(lock):
    unhashed = [name for name, entries in locked(lock).items() if not all(e[2] for e in entries)]
    assert not unhashed, f"requirements/{lock}: no hashes for {unhashed}: {FIX}"


def test_the_test_lock_uses_the_runtime_versions():
    runtime, test = locked("runtime.txt"), locked("test.txt")
    differ = {name: (runtime[name], test.get(name)) for name in runtime
              if [e[:2] for e in runtime[name]] != [e[:2] for e in test.get(name, [])]}
    assert not differ, f"runtime and test locks disagree on {differ}: {FIX}"


def test_the_agreement_check_catches_a_dependency_missing_from_the_lock(tmp_path, monkeypatch):
    """The check above can fail: a pyproject.toml with one more dependency than the lock."""
    fake = tmp_path / "root"
    (fake / "requirements").mkdir(parents=True)
    for name in ("runtime.txt", "test.txt"):
        (fake / "requirements" / name).write_text((ROOT / "requirements" / name).read_text())
    pyproject = (ROOT / "pyproject.toml").read_text().replace(
        "dependencies = [\n", 'dependencies = [\n  "left-pad-for-python>=1.0",\n', 1)
    (fake / "pyproject.toml").write_text(pyproject)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake)
    with pytest.raises(AssertionError, match="left-pad-for-python is in pyproject.toml"):
        test_every_declared_dependency_is_locked_within_its_range("runtime.txt", None)
