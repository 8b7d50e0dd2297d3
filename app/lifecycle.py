"""Starting after a crash, and stopping gracefully.

Startup (:func:`recover_after_restart`, before the unfinished records are marked
``interrupted``): remove the temporary files of writes a killed process left behind (blob
store, embedded-model build, model-hash cache, merges, single-file config copies), and
check that the blobs named by the records left unfinished are on disk (a record whose
blob is gone is logged and ends ``interrupted`` with ``error_code=blob_missing``).

Shutdown (:class:`Lifecycle`), on SIGTERM/SIGINT under uvicorn, else when the lifespan
ends:

1. new work is refused at once: the work routes answer 503 ``shutting_down`` with
   ``Retry-After`` (``app.ratelimit.WorkGuard``), the queues refuse jobs, ``/ready``
   answers 503;
2. every queued job is interrupted and recorded ``interrupted``;
3. running jobs get ``BILDWERK_SHUTDOWN_GRACE_S`` to finish;
4. whatever still runs is stopped at its next step and recorded ``interrupted``;
5. then uvicorn is told to exit: it closes the socket, answers the last responses and
   ends the lifespan, and the process exits with status 0.

Under uvicorn the server keeps listening through steps 1-4, so clients get a clear 503 (and
waiting clients their job's end) instead of a refused connection. A second signal skips
the rest of the grace period. uvicorn's handler is found through ``signal.getsignal`` (a
bound method of its ``Server``), which is how uvicorn itself and sse-starlette expose it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings
from app.jobs.job import Job, JobFailure
from app.jobs.queue import JobQueue
from app.persistence.blob_stores import local_blobs_root
from app.persistence.blobs import BlobStore, sweep_temp_files
from app.persistence.records import RecordFilter, RecordRepository

log = logging.getLogger("bildwerk.lifecycle")

STOP_WAIT_S = 10.0  # after the grace: how long an interrupted job may take to stop
POLL_S = 0.05
STALE_SYSTEM_TMP_S = 3600  # system-temp copies older than this belong to no live load
INTERRUPTED_MESSAGE = "the server shut down before this job finished"


# -- startup ------------------------------------------------------------------------------
@dataclass
class RecoveryReport:
    temp_files_removed: int = 0
    unfinished: int = 0
    missing_blobs: dict[str, list[str]] = field(default_factory=dict)  # record -> blobs


# Set by ``bildwerk serve`` for its worker processes (BILDWERK_WORKERS > 1) once it has done
# what they must not do at once on one data dir: see prepare_for_workers.
PREPARED_BY_PARENT = "BILDWERK_SERVE_PREPARED_BY_PARENT"


def prepare_for_workers(settings: Settings) -> None:
    """Before ``bildwerk serve`` starts several server processes on one data dir: migrate
    the database, install the embedded model and sweep the temp files once, here. Done by
    each process at once they would race (two migrations, two installs), and one's sweep
    would delete the files another is writing."""
    from app.persistence.database import Database
    from app.persistence.integrity import check_database
    from app.pipelines.embedded import ensure_embedded_model

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_database(settings)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    ensure_embedded_model(settings.embedded_dir / settings.embedded_model_id)
    removed = _sweep_temp(settings)
    if removed:
        log.info("removed %d temp file(s) left by an earlier process", removed)
    os.environ[PREPARED_BY_PARENT] = "1"  # the worker processes inherit it


def recover_after_restart(settings: Settings, records: RecordRepository,
                          blobs: BlobStore | None = None) -> RecoveryReport:
    """Clean up after a process that did not stop gracefully (``kill -9``, power loss).
    Cheap: only temp-file patterns and the records left queued/running are looked at.
    ``blobs``: the configured store (a folder or a bucket); default: the folder
    ``<data_dir>/blobs``. A worker process of ``bildwerk serve`` leaves the temp files to
    its parent, which swept them before starting it (:func:`prepare_for_workers`)."""
    swept = 0 if os.environ.get(PREPARED_BY_PARENT) else _sweep_temp(settings)
    report = RecoveryReport(temp_files_removed=swept)
    root = local_blobs_root(settings)

    def stored(sha: str) -> bool:
        if blobs is not None:
            return blobs.exists(sha)
        return root is not None and (root / sha[:2].lower() / sha.lower()).is_file()

    where = settings.blob_store or settings.blobs_dir
    for status in ("queued", "running"):
        offset = 0
        while True:
            rows, total = records.list(RecordFilter(status=status, limit=500, offset=offset))
            report.unfinished += len(rows)
            for row in rows:
                missing = [sha for sha in _blob_refs(row) if not stored(sha)]
                if missing:
                    report.missing_blobs[row.id] = missing
            offset += len(rows)
            if not rows or offset >= total:
                break
    for record_id, missing in report.missing_blobs.items():
        log.error("record %s names blob(s) missing from %s: %s", record_id, where,
                  ", ".join(missing))
        records.finish(record_id, status="interrupted", error_code="blob_missing",
                       error_message=f"{INTERRUPTED_MESSAGE}, and its blob(s) "
                       f"{', '.join(missing)} are missing from the blob store")
    if report.temp_files_removed:
        log.warning("removed %d temporary file(s) left by an earlier process",
                    report.temp_files_removed)
    return report


def _blob_refs(row: Any) -> list[str]:
    refs = [row.input_image_sha256, row.mask_sha256, row.mask_applied_sha256]
    refs += [out.sha256 for out in row.outputs]
    return [sha for sha in refs if sha]


def _sweep_temp(settings: Settings) -> int:
    root = local_blobs_root(settings)  # a bucket has no temp files of ours
    removed = sweep_temp_files(root) if root is not None and root.is_dir() else 0
    leftovers: list[Path] = []
    if settings.embedded_dir.is_dir():  # app/pipelines/embedded.py builds in .building-*
        leftovers += settings.embedded_dir.glob(".building-*")
    hashes_tmp = settings.data_dir / "model_hashes.tmp"  # app/pipelines/hashes.py
    if hashes_tmp.exists():
        leftovers.append(hashes_tmp)
    if settings.models_dir.is_dir():  # app/pipelines/merge.py: .<name>.<pid>.safetensors.tmp
        leftovers += [p for p in settings.models_dir.glob(".*.safetensors.tmp")
                      if not _pid_alive(p.name.rsplit(".", 3)[-3])]
    cutoff = time.time() - STALE_SYSTEM_TMP_S  # single-file loads: another server may run
    leftovers += [p for p in Path(tempfile.gettempdir()).glob("bildwerk-config-*")
                  if _mtime(p) < cutoff]
    for path in leftovers:
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)
    return removed


def _pid_alive(text: str) -> bool:
    if not text.isdigit() or int(text) == os.getpid():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


# -- shutdown -----------------------------------------------------------------------------
class Lifecycle:
    """The shutdown sequence of one app; ``draining`` is read by the work routes' guard."""

    def __init__(self, queues: list[JobQueue], records: RecordRepository,
                 grace_s: float) -> None:
        self.queues = list({id(q): q for q in queues}.values())
        self.records = records
        self.grace_s = grace_s
        self.draining = False
        self._hurry = False
        self._drain: asyncio.Future | None = None
        self._exit_task: asyncio.Task | None = None
        self._previous: dict[int, Any] = {}

    @classmethod
    def start(cls, queues: list[JobQueue], records: RecordRepository,
              settings: Settings) -> Lifecycle:
        """Build it and take over SIGTERM/SIGINT when running under uvicorn."""
        lifecycle = cls(queues, records, settings.shutdown_grace_s)
        lifecycle.install_signal_handlers()
        return lifecycle

    # -- signals --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Put our drain in front of the server's SIGTERM/SIGINT handlers. Only a server
        whose handler is a bound method of an object with ``should_exit`` (uvicorn's
        ``Server``) is wrapped; elsewhere the drain runs when the lifespan ends."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not hasattr(getattr(previous, "__self__", None), "should_exit"):
                continue
            self._previous[sig] = previous

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                if self.draining:  # a second signal: stop waiting, let the server go
                    self._hurry = True
                    previous(signum, frame)
                    return
                self.draining = True  # from now on the guard answers 503
                loop.call_soon_threadsafe(self._drain_then_exit, signum, previous)

            signal.signal(sig, handler)

    def _drain_then_exit(self, signum: int, previous: Any) -> None:
        log.warning("%s received: refusing new work; running jobs get %.0f s to finish",
                    signal.Signals(signum).name, self.grace_s)

        async def drain_then_exit() -> None:
            try:
                await self.shutdown()
            finally:
                self._restore_signal_handlers()
                server = previous.__self__
                server.should_exit = True  # uvicorn's own shutdown, then exit status 0

        self._exit_task = asyncio.ensure_future(drain_then_exit())

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    # -- the drain ------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Run the shutdown sequence once; later calls wait for the same one."""
        self.draining = True
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._run())
        await asyncio.shield(self._drain)
        self._restore_signal_handlers()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interrupted = [job for q in self.queues for job in q.close()]
        if interrupted:
            log.warning("interrupted %d queued job(s)", len(interrupted))
            await asyncio.to_thread(self._record, interrupted,
                                    "the server shut down before this job started")
        deadline = loop.time() + self.grace_s
        while self._running() and loop.time() < deadline and not self._hurry:
            await asyncio.sleep(POLL_S)
        stopping = [job for q in self.queues for job in q.interrupt_running()]
        if stopping:
            log.warning("interrupting %d job(s) still running after the grace period",
                        len(stopping))
        deadline = loop.time() + STOP_WAIT_S
        while self._running() and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        # A job that did not reach a step boundary (a remote call, a model load): end it
        # here, so that waiting clients get their answer and the record its ending.
        stuck = [job for q in self.queues for job in q.unfinished()]
        for job in stuck:
            job.finish("interrupted", error=JobFailure("interrupted", INTERRUPTED_MESSAGE, 503))
        if stuck:
            log.error("%d job(s) did not stop in time; recorded interrupted", len(stuck))
            await asyncio.to_thread(self._record, stuck, INTERRUPTED_MESSAGE)

    def _running(self) -> bool:
        return any(q.running is not None for q in self.queues)

    def _record(self, jobs: list[Job], message: str) -> None:
        for job in jobs:
            try:
                self.records.finish(job.record_id, status="interrupted",
                                    error_code="interrupted", error_message=message)
            except Exception:  # the database may be going away too; startup catches it
                log.exception("cannot record job %s as interrupted", job.id)

