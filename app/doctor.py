"""``bildwerk doctor``: what a bug report needs, gathered in one place.

Each section is a list of ``(label, value)`` lines; :func:`report` builds them and
:func:`render` prints them. Nothing here changes state: the database is opened read-only
in spirit (no migration is run) and secrets never appear (the database URL loses its
password, providers say *why* they are unusable, never the key).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from app.config import Settings
from app.persistence.integrity import describe

KEY_PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "fastapi",
                "pydantic", "sqlalchemy", "openai", "google-genai", "huggingface-hub")


@dataclass
class Section:
    title: str
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: object) -> None:
        self.lines.append((label, str(value)))


@dataclass(frozen=True)
class LockDrift:
    """Installed versions that differ from the lock (``None`` installed = missing)."""

    lock: Path
    checked: int
    differ: list[tuple[str, str, str | None]]  # (name, locked, installed)

    @property
    def ok(self) -> bool:
        return not self.differ


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a requirements lock, for this interpreter (lines
    whose environment marker does not apply here are left out)."""
    pins: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("-") or "==" not in line:
            continue
        spec, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = spec.partition("==")
        pins[canonicalize_name(name.split("[")[0].strip())] = version.strip()
    return pins


def find_lock_dir(start: Path | None = None) -> Path | None:
    """The ``requirements/`` folder of the checkout (or image) this code runs from."""
    here = Path(__file__).resolve().parent.parent
    for folder in (start, here / "requirements", Path.cwd() / "requirements"):
        if folder is not None and (folder / "runtime.txt").is_file():
            return folder
    return None


def check_lock(lock_dir: Path) -> LockDrift:
    """Compare the installed packages with the test lock when the test tools are
    installed, else with the runtime lock."""
    lock = lock_dir / ("test.txt" if installed_version("pytest") else "runtime.txt")
    pins = read_lock(lock)
    differ = [(name, want, have) for name, want in sorted(pins.items())
              if (have := installed_version(name)) != want]
    return LockDrift(lock, len(pins), differ)


def _versions() -> Section:
    section = Section("Versions")
    section.add("python", f"{platform.python_version()} ({sys.executable})")
    section.add("platform", platform.platform())
    for name in KEY_PACKAGES:
        section.add(name, installed_version(name) or "not installed")
    return section


def _device(settings: Settings) -> Section:
    import torch

    section = Section("Device")
    section.add("BILDWERK_DEVICE", settings.device)
    section.add("torch build", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if torch.cuda.is_available():
        section.add("selected", "cuda (fp16)" if settings.device in ("auto", "cuda")
                    else settings.device)
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            section.add(f"gpu {index}", f"{props.name}, {total / 2**30:.1f} GiB "
                        f"({free / 2**30:.1f} GiB free), compute {props.major}.{props.minor}")
        section.add("driver", _nvidia_driver() or "unknown (nvidia-smi not found)")
    else:
        chosen = "mps" if (getattr(torch.backends, "mps", None)
                           and torch.backends.mps.is_available()) else "cpu"
        section.add("selected", f"{chosen} (no CUDA device visible to torch)")
        section.add("cpu threads", torch.get_num_threads())
    return section


def _fast_path(settings: Settings) -> Section:
    """What loaded pipelines will run with (app/pipelines/fast_path.py)."""
    import torch

    from app.pipelines.fast_path import cpu_has_bf16, usable_cores
    from app.services.batching import batch_policy

    section = Section("Fast path")
    cuda = torch.cuda.is_available() and settings.device in ("auto", "cuda")
    section.add("weights", settings.cuda_dtype if cuda else settings.cpu_dtype)
    if not cuda:
        section.add("cpu bf16", "native" if cpu_has_bf16() else "not supported")
    section.add("attention", "sdpa (torch.nn.functional.scaled_dot_product_attention)")
    section.add("channels_last", "on" if settings.channels_last == "on" or (
        settings.channels_last == "auto" and cuda) else "off")
    section.add("torch.compile", settings.compile)
    section.add("torch threads", settings.torch_threads or
                f"by model size (1 for a job on a small model, {usable_cores()} for "
                "large models and batches of several jobs)")
    policy = batch_policy(settings) if settings.executor == "local" else None
    section.add("batching", f"up to {policy.max_images} images per call, waits "
                f"{settings.batch_wait_ms:g} ms while busy" if policy else "off")
    if cuda:
        section.add("tf32", "on")
        section.add("vae", f"slicing; tiling above {settings.vae_tile_above}px"
                    if settings.vae_tile_above else "slicing")
    return section


def _nvidia_driver() -> str | None:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None


def _storage(settings: Settings) -> Section:
    section = Section("Storage")
    section.add("data dir", settings.data_dir.resolve())
    section.add("models dir", settings.models_dir.resolve())
    url = settings.resolved_database_url
    section.add("database", describe(url))  # never the password
    head, current = migration_state(url)
    section.add("migration head", head)
    section.add("database at", current)
    return section


def migration_state(url: str) -> tuple[str, str]:
    """(the newest migration this code ships, the revision the database is at)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from app.persistence.database import MIGRATIONS_DIR, make_engine

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head() or "none"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return head, "not created yet (the server creates it on first start)"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - the report says what went wrong instead
        return head, f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        engine.dispose()
    if current is None:
        return head, "empty (no migration applied)"
    return head, current if current == head else f"{current} (behind: start the server)"


def _providers(settings: Settings) -> Section:
    """Each provider as the server builds it (:func:`build_services`), and whether it is
    usable now."""
    from app.services.container import build_services

    section = Section("Providers")
    try:
        providers = build_services(settings).providers
    except Exception as exc:  # noqa: BLE001 - e.g. model discovery failed: say so
        section.add("local", f"not usable: {type(exc).__name__}: {exc}")
        return section
    for name in providers.names():
        try:
            state = providers.get(name).availability()
            text = "usable" if state.usable else f"not usable: {state.reason}"
        except Exception as exc:  # noqa: BLE001 - a broken provider is reported, not fatal
            text = f"not usable: {type(exc).__name__}: {exc}"
        section.add(name, text)
    return section


def _lock(lock_dir: Path | None) -> tuple[Section, LockDrift | None]:
    section = Section("Lock")
    if lock_dir is None:
        section.add("lock", "not found (no requirements/ beside the code or in the current "
                    "folder): installed versions were not checked")
        return section, None
    drift = check_lock(lock_dir)
    section.add("lock", drift.lock)
    if drift.ok:
        section.add("installed", f"matches the lock ({drift.checked} packages)")
    else:
        section.add("installed", f"DIFFERS from the lock in {len(drift.differ)} of "
                    f"{drift.checked} packages; reinstall with scripts/bootstrap")
        for name, want, have in drift.differ:
            section.add(f"  {name}", f"locked {want}, installed {have or 'nothing'}")
    return section, drift


def report(settings: Settings, lock_dir: Path | None = None) -> tuple[list[Section], bool]:
    """Every section, and whether the installed packages match the lock."""
    lock_section, drift = _lock(find_lock_dir(lock_dir))
    sections = [_versions(), _device(settings), _fast_path(settings), _storage(settings),
                _providers(settings), lock_section]
    return sections, drift is None or drift.ok


def render(sections: list[Section]) -> str:
    out: list[str] = []
    for section in sections:
        out.append(f"{section.title}:")
        width = max((len(label) for label, _ in section.lines), default=0)
        out.extend(f"  {label.ljust(width)}  {value}" for label, value in section.lines)
        out.append("")
    return "\n".join(out)
