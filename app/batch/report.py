"""The batch folder: images, ``info.json`` and ``info.md``, as the GPT batch tool left them.

``info.json`` lists one entry per input item (``index``, 1-based), succeeded or failed:
the prompt, the request sent, the parameters the server used, the model, the job and
record ids, and per image its file name, sha256 and seed; a failed item carries the
server's error ``{"code", "message", "param"}``. It is rewritten after every finished item
through a temporary file and ``os.replace``, so a batch killed at any moment leaves a
complete, readable list, and images are written the same way before they are listed.

Resume: an item counts as done when its entry succeeded, was made from the same request
(``key``, a fingerprint of the request) and every listed file is there with its sha256.
Everything else (missing, failed, changed, damaged) is made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from app.batch.inputs import BatchItem

INFO_JSON = "info.json"
INFO_MD = "info.md"
FORMAT = "bildwerk-batch/1"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def slug(text: str, limit: int = 40) -> str:
    """``text`` as a file-name part: lower-case ASCII words joined by ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words)[:limit].strip("-") or "image"


def image_name(item: BatchItem, number: int) -> str:
    """``0007-a-lighthouse-at-dusk.png``; with several images ``0007-...-2.png``."""
    base = f"{item.index:04d}-{slug(item.notes.get('title') or item.request['prompt'])}"
    return f"{base}-{number + 1}.png" if item.num_images > 1 else f"{base}.png"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class BatchReport:
    """The list of a batch folder, loaded from and saved to its ``info.json``.

    Args:
        folder (`Path`): the batch folder (``--out``).
        header (`dict`): what the batch was run with: ``server``, ``source``, ``options``.
    """

    def __init__(self, folder: Path, header: dict) -> None:
        self.folder = folder
        self.header = header
        self.entries: dict[int, dict] = {}
        self.created_at = _now()
        self.warnings: list[str] = []

    @classmethod
    def open(cls, folder: Path, header: dict) -> BatchReport:
        """The folder's report, created if missing. An ``info.json`` that cannot be read
        is moved aside (``info.json.unreadable-<time>``) with a warning, and its items are
        made again."""
        folder.mkdir(parents=True, exist_ok=True)
        report = cls(folder, header)
        path = folder / INFO_JSON
        if not path.exists():
            return report
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {int(e["index"]): e for e in data["items"] if isinstance(e, dict)}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = path.with_name(f"{INFO_JSON}.unreadable-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            os.replace(path, aside)
            report.warnings.append(f"{path} could not be read ({type(exc).__name__}: {exc}); "
                                   f"moved it to {aside.name}, every item is made again")
            return report
        report.entries = entries
        report.created_at = data.get("created_at") or report.created_at
        return report

    # -- resume -------------------------------------------------------------------------
    def is_done(self, item: BatchItem) -> bool:
        """Whether ``item`` was made from the same request and all its files are intact."""
        entry = self.entries.get(item.index)
        if not entry or entry.get("status") != "succeeded" or entry.get("key") != item.key:
            return False
        images = entry.get("images") or []
        return len(images) == item.num_images and all(
            _sha256_of(self.folder / Path(img.get("file", "")).name) == img.get("sha256")
            for img in images)

    # -- recording ----------------------------------------------------------------------
    def succeeded(self, item: BatchItem, result: dict, images: list[tuple[dict, bytes]]
                  ) -> dict:
        """Write the images of a finished item, list it, and save the report."""
        listed = []
        for number, (image, data) in enumerate(images):
            name = image_name(item, number)
            write_atomic(self.folder / name, data)
            listed.append({"file": name, "sha256": image["sha256"], "seed": image.get("seed"),
                           "width": image.get("width"), "height": image.get("height"),
                           "url": image.get("url")})
        self._drop_replaced(item.index, {img["file"] for img in listed})
        prompting = result.get("prompting") or {}
        entry = self._entry(
            item, "succeeded", prompt_used=prompting.get("used") or result.get("prompt"),
            negative_prompt=result.get("negative_prompt"), model=result.get("model"),
            provider=result.get("provider"), parameters=result.get("parameters"),
            job_id=result.get("job_id"), record_id=result.get("record_id"), images=listed,
            error=None)
        self.entries[item.index] = entry
        self.save()
        return entry

    def failed(self, item: BatchItem, error: dict, *, status: int | None = None,
               job: dict | None = None) -> dict:
        """List a failed item with the server's error (made again next run), and save."""
        job = job or {}
        entry = self._entry(item, "failed", job_id=job.get("job_id"),
                            record_id=job.get("record_id"), images=[], http_status=status,
                            error=error)
        self.entries[item.index] = entry
        self.save()
        return entry

    def _entry(self, item: BatchItem, status: str, **facts) -> dict:
        return {"index": item.index, "status": status, **item.notes,
                "prompt": item.request["prompt"], **facts, "request": item.request,
                "key": item.key, "source": item.source, "finished_at": _now()}

    def _drop_replaced(self, index: int, keep: set[str]) -> None:
        """Files of an older entry for this index (made from another request) that the
        new images did not overwrite."""
        for image in (self.entries.get(index) or {}).get("images") or []:
            name = Path(image.get("file", "")).name
            if name and name not in keep:
                (self.folder / name).unlink(missing_ok=True)

    # -- saving -------------------------------------------------------------------------
    def summary(self) -> dict:
        entries = self.entries.values()
        return {"items": len(self.entries),
                "succeeded": sum(e.get("status") == "succeeded" for e in entries),
                "failed": sum(e.get("status") == "failed" for e in entries),
                "images": sum(len(e.get("images") or []) for e in entries)}

    def to_json(self) -> dict:
        return {"format": FORMAT, "tool": "bildwerk generate", **self.header,
                "created_at": self.created_at, "updated_at": _now(),
                "summary": self.summary(),
                "items": [self.entries[i] for i in sorted(self.entries)]}

    def save(self) -> None:
        """Rewrite ``info.json`` and ``info.md`` atomically."""
        data = self.to_json()
        write_atomic(self.folder / INFO_JSON, (json.dumps(
            data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        write_atomic(self.folder / INFO_MD, render_markdown(data, self.folder.name)
                     .encode("utf-8"))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_markdown(data: dict, name: str) -> str:
    """``info.md``: a table of every image, then the failed items with their errors."""
    items = data.get("items") or []
    s = data.get("summary") or {}
    source = f"`{data['source']}`" if data.get("source") else "one prompt"
    lines = [f"# {name}", "",
             f"Made with `bildwerk generate` from {source} on {data.get('server')}. "
             f"Updated {data.get('updated_at')}: {_count(s.get('items', 0), 'item')}, "
             f"{s.get('succeeded', 0)} succeeded, {s.get('failed', 0)} failed, "
             f"{_count(s.get('images', 0), 'image')}.", ""]
    titled = any(e.get("title") for e in items)
    head = ["#", "image", *(["title"] if titled else []), "prompt", "seed", "size", "steps",
            "guidance", "scheduler", "model", "record", "job"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e in items:
        params = e.get("parameters") or {}
        for img in e.get("images") or []:
            row = [e["index"], f"[{img['file']}]({img['file']})",
                   *([e.get("title")] if titled else []), e.get("prompt_used") or e["prompt"],
                   img.get("seed"), f"{img.get('width')}×{img.get('height')}",
                   params.get("steps"), params.get("guidance_scale"), params.get("scheduler"),
                   e.get("model"), f"`{e.get('record_id')}`", f"`{e.get('job_id')}`"]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    failed = [e for e in items if e.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed (made again on the next run)", "",
                  "| # | prompt | status | error | param | message |", "|---|---|---|---|---|---|"]
        for e in failed:
            err = e.get("error") or {}
            row = [e["index"], e["prompt"], e.get("http_status"), f"`{err.get('code')}`",
                   err.get("param"), err.get("message")]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
