"""What ``bildwerk generate`` does, apart from parsing its options (``app/cli.py``).

Exit status: 0 when every item is made (now or before), 1 when any item failed (each is
listed with the server's error in ``info.json``/``info.md`` and made again on the next
run), 2 for a usage or input error, an unreachable server or a refused key, 130 when
interrupted by Ctrl-C and 143 by SIGTERM (jobs in flight are cancelled on the server,
finished items stay listed; run the same command again to resume).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from app.batch.inputs import BatchItem, InputError, read_items, single_item
from app.batch.report import INFO_JSON, INFO_MD, BatchReport, slug
from app.batch.runner import BatchClient, BatchSummary, Fatal, run_batch

DEFAULT_URL = "http://127.0.0.1:8000"
OK, FAILED_ITEMS, ERROR, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143


def default_out(prompt: str | None, file: Path | None) -> Path:
    """``output/<file stem>`` or ``output/<prompt words>``: the same command writes to
    (and resumes in) the same folder."""
    return Path("output") / slug(file.stem if file is not None else prompt or "batch")


def generate(prompt: str | None, file: Path | None, out: Path | None, options: dict, *,
             url: str, api_key: str | None, concurrency: int = 2, retries: int = 8,
             progress: bool = True, echo: Callable[..., None] = print,
             exact: bool = True) -> int:
    """Run the batch; returns the exit status. ``echo(text, err=bool)`` prints."""
    options = {k: v for k, v in options.items() if v is not None and v != []}
    try:
        items = _items(prompt, file, options, echo)
    except InputError as exc:
        echo(f"error: {exc}", err=True)
        return ERROR
    folder = out or default_out(prompt, file)
    header = {"server": url.rstrip("/"),
              "source": str(file) if file is not None else None, "options": options}
    try:
        report = BatchReport.open(folder, header)
    except OSError as exc:
        echo(f"error: cannot use {folder} as the batch folder: {exc}", err=True)
        return ERROR
    for warning in report.warnings:
        echo(f"warning: {warning}", err=True)
    try:
        summary = asyncio.run(_run(items, report, url, api_key, concurrency, retries,
                                   progress, echo, exact))
    except Fatal as exc:
        echo(f"error: {exc}", err=True)
        return ERROR
    except OSError as exc:
        echo(f"error: cannot write into {folder}: {exc}", err=True)
        return ERROR
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        echo(f"interrupted: the finished items are listed in {folder / INFO_JSON}; run "
             "the same command again to make the rest", err=True)
        return INTERRUPTED if isinstance(exc, KeyboardInterrupt) else TERMINATED
    return _report(summary, folder, echo)


def _items(prompt: str | None, file: Path | None, options: dict,
           echo: Callable[..., None]) -> list[BatchItem]:
    if (prompt is None) == (file is None):
        raise InputError("give one prompt, or --file with prompts (.csv, .jsonl or .txt), "
                         "not both" if prompt is not None else
                         "give a prompt, or --file with prompts (.csv, .jsonl or .txt)")
    if file is None:
        return [single_item(prompt or "", options)]
    items, warnings = read_items(file, options)
    for warning in warnings:
        echo(f"warning: {warning}", err=True)
    return items


async def _run(items: list[BatchItem], report: BatchReport, url: str, api_key: str | None,
               concurrency: int, retries: int, progress: bool,
               echo: Callable[..., None], exact: bool = True) -> BatchSummary:
    _cancel_on_sigterm()
    client = BatchClient(url, api_key, retries=retries, exact=exact)
    try:
        return await run_batch(items, report, client, concurrency=concurrency,
                               progress=progress)
    finally:
        await client.aclose()


def _cancel_on_sigterm() -> None:
    """SIGTERM stops the batch like Ctrl-C: jobs in flight are cancelled on the server."""
    task = asyncio.current_task()
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        pass


def _report(summary: BatchSummary, folder: Path, echo: Callable[..., None]) -> int:
    parts = [f"{summary.items} item{'' if summary.items == 1 else 's'}"]
    if summary.skipped:
        parts.append(f"{summary.skipped} already done")
    parts.append(f"{summary.succeeded} made ({summary.images} "
                 f"image{'' if summary.images == 1 else 's'})")
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    echo(f"{', '.join(parts)}: {folder} ({INFO_JSON}, {INFO_MD})")
    if summary.failed:
        echo(f"error: {summary.failed} of {summary.items} items failed (listed with the "
             f"server's errors in {folder / INFO_MD}); run the same command again to retry "
             "them", err=True)
        return FAILED_ITEMS
    return OK
