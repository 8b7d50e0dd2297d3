"""Runs work off Blender's main thread, and shows how it goes.

A :class:`Run` has two halves: ``work`` runs in a background thread (HTTP only, no
Blender data), ``apply`` runs on the main thread afterwards (creates images, strips,
text blocks). In the UI a timer polls the thread and calls ``apply`` when it ends, so
Blender never blocks. With ``wait=True`` (scripts, tests, ``blender -b`` where timers do
not run) both halves run at once in the caller's thread.

``STATUS`` is what the panels show; ``window_manager.bildwerk_status`` exposes it as
read-only properties, so panels and scripts can read it.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import bpy

from .http_client import BildwerkError, Cancelled, one_line
from .plan import Reporter


class Status:
    def __init__(self) -> None:
        self.busy = False
        self.label = ""
        self.progress = 0.0
        self.text = ""
        self.frames_done = 0
        self.message = ""  # the last run's one-line outcome or error
        self.failed = False
        self.job_id = ""
        self.last_record_id = ""
        self.last_seed = ""
        self.last_image = ""
        self.last_prompt = ""


STATUS = Status()


def debug_enabled() -> bool:
    from .preferences import get_prefs

    prefs = get_prefs()
    return bool(prefs and prefs.debug)


def describe(exc: BaseException) -> str:
    """One line for any failure; the traceback only on the console, only in debug mode."""
    if isinstance(exc, BildwerkError):
        return str(exc)
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return one_line(f"Unexpected {type(exc).__name__}: {exc} (see the system console with "
                    "'Debug' on in the add-on preferences)")


def redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []) or []:
        for area in window.screen.areas:
            area.tag_redraw()


class Run(Reporter):
    """One piece of work: ``work(run)`` in a thread, then ``apply(value)`` on the main
    thread, which returns the message to show."""

    def __init__(self, label: str, work: Callable[[Run], Any],
                 apply: Callable[[Any], str] | None = None, *, show: bool = True) -> None:
        self.label, self.work, self.apply_fn, self.show = label, work, apply, show
        self.cancel_event = threading.Event()
        self.job_id: str | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.message = ""
        self.failed = False
        self.on_cancel: Callable[[str], None] | None = None  # sends DELETE /jobs/{id}
        self.on_error: Callable[[str], None] | None = None  # main thread, with the message
        self.discard = False  # results no longer wanted (abandoned)

    # Reporter
    def progress(self, fraction: float, text: str) -> None:
        if self.show:
            STATUS.progress, STATUS.text = fraction, text

    def frame_done(self, count: int) -> None:
        if self.show:
            STATUS.frames_done = count

    def set_job(self, job_id: str | None) -> None:
        self.job_id = job_id
        if self.show:
            STATUS.job_id = job_id or ""

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    # halves
    def execute(self) -> None:
        try:
            self.value = self.work(self)
        except BaseException as exc:  # reported as one line by finish()
            self.error = exc
        finally:
            self.done.set()

    def finish(self) -> tuple[bool, str]:
        """Main thread: apply the value, or describe the error. Returns (ok, message)."""
        if self.discard:
            return True, f"{self.label}: results dropped"
        if self.error is not None:
            if isinstance(self.error, Cancelled):
                ok, message = True, f"{self.label} cancelled"
            else:
                ok, message = False, describe(self.error)
        else:
            try:
                message = self.apply_fn(self.value) if self.apply_fn else ""
                ok = True
            except BaseException as exc:
                ok, message = False, describe(exc)
        self.message, self.failed = message or f"{self.label}: done", not ok
        if not ok and self.on_error is not None:
            self.on_error(self.message)
        if self.show:
            STATUS.message, STATUS.failed = self.message, self.failed
            STATUS.busy, STATUS.job_id = False, ""
            if ok:
                STATUS.progress = 1.0
        print(f"Bildwerk: {'ERROR: ' if not ok else ''}{self.message}")
        redraw()
        return ok, self.message


class Runner:
    """At most one run at a time."""

    def __init__(self) -> None:
        self.current: Run | None = None
        self._timer = self._tick  # one object, so that it can be unregistered

    @property
    def busy(self) -> bool:
        return self.current is not None

    def start(self, run: Run, wait: bool) -> tuple[bool, str]:
        """Start ``run``. With ``wait``, run it to the end and return (ok, message); else
        return (True, "started") and let the timer finish it."""
        if self.current is not None:
            return False, (f"Bildwerk is busy with {self.current.label}: wait, or cancel "
                           "it first")
        self.current = run
        if run.show:
            STATUS.busy, STATUS.label, STATUS.progress = True, run.label, 0.0
            STATUS.text, STATUS.frames_done, STATUS.message = "starting", 0, ""
            STATUS.failed = False
        if wait:
            try:
                run.execute()
                return run.finish()
            finally:
                self.current = None
        run.thread = threading.Thread(target=run.execute, name=f"bildwerk {run.label}",
                                      daemon=True)
        run.thread.start()
        bpy.app.timers.register(self._timer, first_interval=0.1)
        redraw()
        return True, f"{run.label} started"

    def _tick(self) -> float | None:
        run = self.current
        if run is None:
            return None
        if not run.done.is_set():
            redraw()
            return 0.25
        self.current = None
        ok, _ = run.finish()
        if ok and not bpy.app.background:
            try:  # results made outside an operator: give them their own undo step
                bpy.ops.ed.undo_push(message=f"Bildwerk: {run.label}")
            except (RuntimeError, AttributeError):
                pass
        return None

    def stop_timer(self) -> None:
        if bpy.app.timers.is_registered(self._timer):
            bpy.app.timers.unregister(self._timer)

    def abandon(self) -> None:
        """Another file is opened, or the add-on is disabled: stop the run and drop its
        results (they belonged to the old file)."""
        run = self.current
        if run is None:
            return
        run.discard = True
        self.cancel()
        self.stop_timer()
        self.current = None
        if run.show:
            STATUS.busy, STATUS.job_id = False, ""
            STATUS.message = f"{run.label} stopped: another file was opened"

    def cancel(self, wait: bool = False, timeout: float = 120.0) -> tuple[bool, str]:
        """Ask the running work to stop (DELETE its job). With ``wait``, wait for it and
        apply what finished (e.g. a sequence's frames)."""
        run = self.current
        if run is None:
            return False, "Nothing is running"
        run.cancel_event.set()
        if run.show:
            STATUS.text = "cancelling…"
        job_id = run.job_id
        if job_id and run.on_cancel is not None:
            def send() -> None:
                try:
                    run.on_cancel(job_id)
                except BildwerkError as exc:
                    print(f"Bildwerk: could not cancel job {job_id}: {exc}")

            if wait:
                send()
            else:  # never block the UI on the network
                threading.Thread(target=send, name="bildwerk cancel", daemon=True).start()
        if not wait:
            return True, f"Cancelling {run.label}"
        deadline = time.monotonic() + timeout
        while not run.done.wait(0.1):
            if time.monotonic() > deadline:
                return False, f"{run.label} did not stop within {timeout:g} s"
        if self.current is run:  # the timer has not applied it yet (or never will: -b)
            self.current = None
            ok, message = run.finish()
            return ok, message
        return not run.failed, run.message


MAIN = Runner()  # generation: one at a time
AUX = Runner()  # quick calls (refresh, test connection, rating) beside a long job


def _getter(name: str, cast: Callable = str):
    return lambda self: cast(getattr(STATUS, name))


def _percent(self) -> float:
    return 100.0 * STATUS.progress


class BildwerkStatus(bpy.types.PropertyGroup):
    """Read-only view of ``STATUS`` (``context.window_manager.bildwerk_status``)."""

    busy: bpy.props.BoolProperty(name="Busy", get=_getter("busy", bool))
    label: bpy.props.StringProperty(name="Run", get=_getter("label"))
    progress: bpy.props.FloatProperty(name="Progress", subtype="FACTOR", min=0.0, max=1.0,
                                      get=_getter("progress", float))
    percent: bpy.props.FloatProperty(name="Progress", subtype="PERCENTAGE", min=0.0,
                                     max=100.0, precision=0,
                                     get=_percent)
    text: bpy.props.StringProperty(name="Progress text", get=_getter("text"))
    frames_done: bpy.props.IntProperty(name="Frames done", get=_getter("frames_done", int))
    message: bpy.props.StringProperty(name="Message", get=_getter("message"))
    failed: bpy.props.BoolProperty(name="Failed", get=_getter("failed", bool))
    job_id: bpy.props.StringProperty(name="Job", get=_getter("job_id"))
    last_record_id: bpy.props.StringProperty(name="Record", get=_getter("last_record_id"))
    last_seed: bpy.props.StringProperty(name="Seed", get=_getter("last_seed"))
    last_image: bpy.props.StringProperty(name="Image", get=_getter("last_image"))
    last_prompt: bpy.props.StringProperty(name="Prompt", get=_getter("last_prompt"))


CLASSES = (BildwerkStatus,)


@bpy.app.handlers.persistent
def _on_load_pre(*args) -> None:
    MAIN.abandon()
    AUX.abandon()


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.bildwerk_status = bpy.props.PointerProperty(type=BildwerkStatus)
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    MAIN.abandon()
    AUX.abandon()
    del bpy.types.WindowManager.bildwerk_status
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
