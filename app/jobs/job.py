"""A job's state, progress and events, shared between the worker thread and the
asyncio side (HTTP handlers, SSE streams)."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.jobs.deadline import Deadline

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


def _finished(job: Job) -> dict:
    raise RuntimeError(f"job {job.id} already ran")


@dataclass(frozen=True)
class BatchTicket:
    """What a job that may share one pipeline call with others carries (set by the
    executor; app/services/batching.py): jobs with equal ``key`` are compatible; ``images``
    and ``pixels`` (per image) count against the batch's limits; ``payload`` is the
    executor's own (the plan)."""

    key: tuple
    images: int
    pixels: int
    payload: Any = field(default=None, compare=False)


@dataclass
class JobFailure:
    """How a job failed, as its status and the waiting client see it."""

    code: str
    message: str
    status_code: int
    param: str | None = None


class Preview:
    """A step preview: its number (0-based), the step it shows, and the picture, kept at
    the latent's size (1/8 of the image's sides) and made into a full-size PNG only when
    someone asks for it (``png``): an A1111 client that never polls progress costs no
    encoding on the worker."""

    def __init__(self, small, index: int, step: int, total: int) -> None:
        self.small, self.index, self.step, self.total = small, index, step, total
        self._png: bytes | None = None
        self._lock = threading.Lock()

    @property
    def png(self) -> bytes:
        with self._lock:
            if self._png is None:
                from app.pipelines.preview import full_size

                buffer = io.BytesIO()
                full_size(self.small).save(buffer, format="PNG", compress_level=1)
                self._png = buffer.getvalue()
            return self._png


@dataclass
class Job:
    id: str
    record_id: str
    endpoint: str
    run: Callable[[Job], Any]  # returns the typed result (app.services.runner)
    loop: asyncio.AbstractEventLoop
    owner: str | None = None  # who it counts against (BILDWERK_MAX_QUEUED_PER_KEY)
    model: str = "unknown"  # the model (or remote provider, upscaler) it runs: metrics label
    status: str = "queued"
    stage: str = "queued"
    step: int = 0
    total: int = 0
    frame: int | None = None  # sequences: the frame being made (0-based) …
    frames: int | None = None  # … of how many
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None  # GenerationResult | SequenceResult once finished (or partial)
    error: JobFailure | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _state: threading.Lock = field(default_factory=threading.Lock)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _subscribers: list[asyncio.Queue] = field(default_factory=list)
    _last_progress_emit: float = 0.0
    frame_events: list[dict] = field(default_factory=list)  # replayed to late subscribers
    interrupted: bool = False  # stopped by a shutdown, not by its caller
    deadline: Deadline | None = None  # set when it starts running (start_clock)
    previews: int = 0  # step previews asked for (OpenAI partial_images, A1111 progress)
    preview: Preview | None = None  # the latest one
    # Several processes (app/jobs/bus.py): events also go to the bus, for followers on
    # other ingresses. A job whose steps run elsewhere (``relayed``: the Ray executor) gets
    # its progress, previews and frames from the worker through the bus and publishes
    # only its own status and ending; ``on_cancel`` passes a cancel on to that worker.
    bus: Any = None
    relayed: bool = False
    on_cancel: Callable[[bool], None] | None = None  # called with interrupt: bool
    batch: BatchTicket | None = None  # may run in one pipeline call with compatible jobs

    # -- cancel -------------------------------------------------------------------------
    def request_cancel(self) -> None:
        self._stop(interrupt=False)

    def interrupt(self) -> None:
        """Stop the job because the server shuts down: like a cancel, but it ends (and is
        recorded) ``interrupted``."""
        self.interrupted = True
        self._stop(interrupt=True)

    def _stop(self, *, interrupt: bool) -> None:
        first = not self._cancel.is_set()
        self._cancel.set()
        if first and self.on_cancel is not None and not self.finished:
            self.on_cancel(interrupt)

    def start_clock(self, limit_s: float) -> None:
        """From now on the job may run ``limit_s`` seconds (``BILDWERK_JOB_TIMEOUT_S``)."""
        self.deadline = Deadline.after(limit_s)

    def check_deadline(self) -> None:
        """Raise :class:`~app.errors.JobTimeLimit` once the job ran out of time."""
        if self.deadline is not None:
            self.deadline.check()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def reporter(self):
        """A step reporter wired to this job's progress, cancel flag and time limit."""
        from app.pipelines.progress import StepReporter

        return StepReporter(report=self.set_progress, cancelled=lambda: self.cancel_requested,
                            check_deadline=self.check_deadline, previews=self.previews,
                            preview=self.set_preview if self.previews else None)

    # -- events (callable from any thread) ----------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        progress: dict[str, Any] = {"step": self.step, "total": self.total}
        if self.frames is not None:
            progress.update(frame=self.frame, frames=self.frames)
        return {
            "job_id": self.id, "record_id": self.record_id, "endpoint": self.endpoint,
            "status": self.status, "stage": self.stage, "progress": progress,
        }

    def set_progress(self, stage: str, step: int, total: int) -> None:
        self.stage, self.step, self.total = stage, step, total
        self._emit("progress", self.snapshot())

    def set_frame(self, frame: int, frames: int) -> None:
        self.frame, self.frames, self.step = frame, frames, 0

    def set_preview(self, small, step: int, total: int) -> None:
        """Keep a step preview (a PIL image at the latent's size); subscribers, if any, get
        it as a ``preview`` event with the full-size PNG."""
        index = self.preview.index + 1 if self.preview else 0
        self.preview = preview = Preview(small, index=index, step=step, total=total)
        if self._subscribers or self.bus is not None:
            self._emit("preview", {"index": index, "step": step, "total": total,
                                   "png_base64": base64.b64encode(preview.png).decode()})

    def emit_event(self, event: str, data: dict) -> None:
        """Send a custom event (e.g. ``frame``) to every SSE subscriber; frame events are
        kept so that a client subscribing later still gets every frame."""
        if event == "frame":
            self.frame_events.append(data)
        self._emit(event, data)

    def relay_event(self, event: str, data: dict) -> None:
        """An event the worker running this job published (the Ray executor): keep what
        it says, and pass it to this process's subscribers without publishing it again."""
        if self.finished:
            return
        if event == "progress":
            progress = data.get("progress") or {}
            self.stage = data.get("stage", self.stage)
            self.step, self.total = progress.get("step", 0), progress.get("total", 0)
            if "frame" in progress:
                self.frame, self.frames = progress["frame"], progress["frames"]
            data = self.snapshot()
        elif event == "preview":
            preview = Preview(None, index=data["index"], step=data["step"], total=data["total"])
            preview._png = base64.b64decode(data["png_base64"])
            self.preview = preview
        elif event == "frame":
            self.frame_events.append(data)
        else:
            return  # status and endings are this process's own
        self._emit(event, data, publish=False)

    def try_start(self) -> bool:
        """queued -> running, unless the job was cancelled first (then False)."""
        with self._state:
            if self.status != "queued" or self.cancel_requested:
                return False
            self.status, self.stage, self.started_at = "running", "starting", datetime.now(UTC)
        self._emit("status", self.snapshot())
        return True

    def cancel_if_queued(self) -> bool:
        """queued -> cancelled in one step, so the worker cannot start it meanwhile."""
        with self._state:
            if self.status != "queued":
                return False
            self._finish_locked("cancelled", None,
                                JobFailure("cancelled", "job was cancelled", 409))
        return True

    def interrupt_if_queued(self) -> bool:
        """queued -> interrupted in one step (shutdown), so the worker cannot start it."""
        with self._state:
            if self.status != "queued":
                return False
            self.interrupted = True
            self._finish_locked("interrupted", None, JobFailure(
                "interrupted", "the server shut down before this job started; submit it "
                "again", 503))
        return True

    def finish(self, status: str, *, result: Any = None,
               error: JobFailure | None = None) -> None:
        with self._state:
            if self.finished:
                return
            self._finish_locked(status, result, error)

    def _finish_locked(self, status: str, result: Any, error: JobFailure | None) -> None:
        self.status, self.result, self.error = status, result, error
        self.stage = status
        self.finished_at = datetime.now(UTC)
        self.run = _finished  # drop the request's inputs (images) with the closure
        self.preview = None  # the result is what counts now (finished jobs are kept a while)
        payload = self.snapshot()
        if result is not None:
            payload["result"] = result
        if error is not None:
            payload["error"] = {"code": error.code, "message": error.message,
                                "param": error.param}
        self._emit(status, payload, final=True)

    def _emit(self, event: str, data: dict, final: bool = False, publish: bool = True) -> None:
        if event == "progress":
            now = time.monotonic()
            if now - self._last_progress_emit < 0.02 and self.step != self.total:
                return  # throttle: at most ~50 progress events per second
            self._last_progress_emit = now
        if publish and self.bus is not None and (
                not self.relayed or event not in ("progress", "preview", "frame")):
            self.bus.publish(self.id, event, data)

        def deliver() -> None:
            for queue in list(self._subscribers):
                queue.put_nowait((event, data))
            if final:
                self._done.set()

        try:
            if self.loop.is_closed():
                return
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass  # the event loop is gone (shutdown); nobody is listening

    # -- asyncio side -------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True
