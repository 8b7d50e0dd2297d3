"""Structured logs through structlog.

:func:`configure_logging` (called once at startup by ``bildwerk serve`` and again,
harmlessly, by the app's lifespan) puts one handler on the root logger whose
:class:`structlog.stdlib.ProcessorFormatter` renders every record, the stdlib
``logging.getLogger("bildwerk...")`` calls included:

- ``json``: one JSON object per line (``timestamp``, ``level``, ``logger``, ``message``,
  and every bound context variable);
- ``text``: structlog's console renderer, for people;
- ``auto``: text when stderr is a terminal, else JSON.

While a job runs, the worker binds ``job_id``, ``record_id`` and ``endpoint`` as structlog
context variables (:func:`job_context`), so every line the job's thread logs carries them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, TextIO

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, reset_contextvars

# uvicorn's own loggers: in JSON mode their lines go through our handler too
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        pass


def resolve_format(log_format: str, stream: TextIO | None = None) -> str:
    """``json`` or ``text``: ``auto`` is text on a terminal, else JSON."""
    if log_format in ("json", "text"):
        return log_format
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def _shared_processors() -> list:
    return [structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True)]


def build_formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for ``json`` or ``text`` (``auto`` resolved against stderr)."""
    if resolve_format(log_format) == "json":
        final: list = [structlog.processors.format_exc_info,
                       structlog.processors.EventRenamer("message"),
                       structlog.processors.JSONRenderer(ensure_ascii=False, default=str)]
    else:
        colors = _isatty(sys.stderr)
        final = [structlog.dev.ConsoleRenderer(colors=colors)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final])


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> str:
    """Route every log record through structlog's formatter on stderr; returns the format
    used. Safe to call again: it replaces its own handler only (others, a test runner's
    for one, stay)."""
    fmt = resolve_format(log_format)
    structlog.configure(
        processors=[*_shared_processors(), structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_bildwerk", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler._bildwerk = True  # type: ignore[attr-defined]
    handler.setFormatter(build_formatter(fmt))
    root.addHandler(handler)
    logging.getLogger("bildwerk").setLevel(level)  # libraries keep the root's WARNING
    if fmt == "json":
        logging.captureWarnings(True)  # Python warnings as JSON lines too
        for name in UVICORN_LOGGERS:  # uvicorn's lines through our handler
            logger = logging.getLogger(name)
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True
    return fmt


def job_context(job: Any) -> AbstractContextManager:
    """Bind the job's ids to every log line of this thread while the job runs."""
    return bound_contextvars(**_job_fields(job))


def bind_job_context(job: Any) -> Mapping[str, Any]:
    """Like :func:`job_context`, for a worker loop: bind now, hand the result to
    :func:`unbind_job_context` when the job is over."""
    return bind_contextvars(**_job_fields(job))


def unbind_job_context(tokens: Mapping[str, Any]) -> None:
    reset_contextvars(**tokens)


def _job_fields(job: Any) -> dict[str, Any]:
    return {"job_id": job.id, "record_id": job.record_id, "endpoint": job.endpoint}


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
