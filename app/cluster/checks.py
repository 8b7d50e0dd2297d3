"""What several processes sharing the work need, checked when an ingress starts."""

from __future__ import annotations

from app.config import Settings


class ClusterMisconfigured(RuntimeError):
    """The settings cannot work with several processes; the message says what to set."""


def check_cluster(settings: Settings) -> None:
    """Refuse to start a shared set-up (BILDWERK_CLUSTER, BILDWERK_WORKERS > 1, or
    BILDWERK_EXECUTOR=ray) on SQLite or without Redis."""
    if not settings.shared:
        return
    why = ("BILDWERK_EXECUTOR=ray" if settings.executor == "ray" else
           "BILDWERK_CLUSTER=true" if settings.cluster else
           f"BILDWERK_WORKERS={settings.workers}")
    if settings.resolved_database_url.startswith("sqlite"):
        raise ClusterMisconfigured(
            f"{why} needs PostgreSQL: several processes write the records, and SQLite is "
            "one machine's file with one writer. Set BILDWERK_DATABASE_URL="
            "postgresql+psycopg://user@host/bildwerk (docs/deploy.md).")
    if not settings.redis_url:
        raise ClusterMisconfigured(
            f"{why} needs BILDWERK_REDIS_URL (redis://host:6379/0): job progress, events and "
            "cancels reach the other processes through it (docs/deploy.md).")
    if settings.executor == "ray":
        try:
            import ray  # noqa: F401
            from ray import serve  # noqa: F401
        except ImportError:
            raise ClusterMisconfigured(
                "BILDWERK_EXECUTOR=ray needs Ray Serve: install bildwerk[ray] "
                "(scripts/bootstrap ray)") from None
