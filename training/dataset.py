"""Training sets in the Hugging Face ``imagefolder`` layout, from recorded requests or from
a plain folder of captioned images (the layout of the museum's Satbilder dataset)::

    out/
    ├── metadata.jsonl            or metadata.csv: one row per image
    ├── <record_id>_<index>.png   the output images of each record
    ├── masks/<record_id>.png     inpaint records: the mask, L mode, white = inpainted
    └── inputs/<record_id>.png    inpaint records: the input image

Columns: ``file_name``, ``text`` (the prompt used), ``record_id``, ``seed``, ``endpoint``,
``model``, ``rating``, ``flags``; with inpaint records also ``mask_file_name`` and
``input_file_name`` (paths relative to ``out``; null on the rows of other records). In a
CSV file ``flags`` is joined with ``;``, a missing value is empty, and a text cell that a
spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab or CR first, e.g. a
visitor's prompt) gets a leading ``'`` (:func:`app.csv_cells.safe_cell`; numbers stay
numbers). :func:`read_metadata` and the trainer remove that quote again; JSON Lines keep
the exact text.

Images are read from the blob store's files (``<blobs_dir>/<sha[:2]>/<sha>``), or, when
``blobs_dir`` is a store URL (``file:///…``, ``s3://bucket/prefix``), through that store
(app/persistence/blob_stores.py); the server need not run. A record whose blobs are
missing (or do not match their hash) is skipped and counted. The set is built in a
temporary folder next to ``out`` and renamed into place, so ``out`` is either the old set
or the whole new one, never half of one; a non-empty ``out`` is only replaced with
``overwrite=True``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from app.csv_cells import restore_cell, safe_cell
from app.errors import BildwerkError
from app.files import replacing_folder
from app.imaging.masks import binary_mask
from app.persistence.database import Database
from app.persistence.orm import RecordRow
from app.persistence.records import RecordFilter, RecordRepository

Format = Literal["jsonl", "csv"]
FORMATS = ("jsonl", "csv")
INPAINT_ENDPOINTS = ("inpaint", "inpainting")  # /inpaint and the kiosk's /inpainting/
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif",
                            ".tiff"})
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
RECORD_COLUMNS = ("file_name", "text", "record_id", "seed", "endpoint", "model", "rating",
                  "flags")
INPAINT_COLUMNS = ("mask_file_name", "input_file_name")
_FLAG = re.compile(r"^[a-z0-9_]{1,32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class ExportResult:
    out: Path
    count: int  # rows (images) written
    skipped: int  # records (or folder images) left out: missing or unreadable files
    metadata_path: Path


class DatasetError(ValueError):
    """Arguments or a source that cannot make a dataset."""


def export_records(
    db_url: str,
    blobs_dir: Path | str,
    out: Path,
    *,
    s3_endpoint_url: str | None = None,
    endpoint: str | None = None,
    min_rating: int | None = None,
    flags: list[str] | None = None,
    exclude_flags: list[str] | None = ("exclude",),  # type: ignore[assignment]
    since: datetime | None = None,
    until: datetime | None = None,
    key_id: str | None = None,
    client_host: str | None = None,
    status: str = "succeeded",
    fmt: Format = "jsonl",
    include_masks: bool = True,
    limit: int | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the output images of the matching records, oldest first, as a dataset.

    ``endpoint`` may list several, comma-separated (``inpaint,inpainting`` takes the
    kiosk's records too). ``flags``: the feedback must carry all of them;
    ``exclude_flags``: none of them (default: leave out records flagged ``exclude``).
    ``since``/``until`` compare ``created_at`` (a time without a zone is UTC). ``status``
    ``any`` (or empty) takes every status. ``limit``: read at most this many records.
    ``blobs_dir``: the blob folder, or a blob store URL (``s3_endpoint_url`` for an
    S3-compatible server other than AWS).
    """
    out = Path(out)
    blobs_dir = _blob_source(blobs_dir, s3_endpoint_url)
    _check_format(fmt)
    wanted = tuple(_checked_flags(flags, "flags"))
    unwanted = tuple(_checked_flags(exclude_flags, "exclude_flags"))
    if min_rating is not None and not 1 <= min_rating <= 5:
        raise DatasetError("min_rating must be between 1 and 5")
    if limit is not None and limit < 1:
        raise DatasetError("limit must be at least 1")
    _check_target(out, overwrite, sources=[blobs_dir] if isinstance(blobs_dir, Path) else [])
    endpoints = tuple(e.strip() for e in (endpoint or "").split(",") if e.strip())
    flt = RecordFilter(
        endpoints=endpoints, status=None if status in ("", "any") else status, since=since,
        until=until, api_key_id=key_id, client_host=client_host, min_rating=min_rating,
        flags=wanted, exclude_flags=unwanted, oldest_first=True, limit=limit)
    db = Database(db_url)
    try:
        db.migrate()  # an older database gains the feedback columns (as the server would)
        rows, skipped = [], 0
        with _building(out, overwrite) as tmp:
            for record in RecordRepository(db).iterate(flt):
                written = _export_record(record, blobs_dir, tmp, include_masks)
                if written is None:
                    skipped += 1
                else:
                    rows.extend(written)
            if any("mask_file_name" in row for row in rows):
                rows = [{**row, **{key: row.get(key) for key in INPAINT_COLUMNS}}
                        for row in rows]
            metadata = _write_metadata(tmp, rows, fmt)
    finally:
        db.dispose()
    return ExportResult(out=out, count=len(rows), skipped=skipped,
                        metadata_path=out / metadata.name)


def export_folder(src: Path, out: Path, *, fmt: Format = "jsonl", caption_ext: str = ".txt",
                  overwrite: bool = False) -> ExportResult:
    """Copy a folder into the layout: with a ``metadata.jsonl`` or ``metadata.csv`` at its
    top, the files its rows name (``file_name`` and any ``*_file_name``) and its columns;
    otherwise every image with a same-name caption file (``a.png`` + ``a.txt``, or
    ``a.png.txt``) as ``file_name`` + ``text``. Relative paths are kept; hidden files and
    folders are ignored. Images that are unreadable, lack a caption, or rows naming a
    missing file or one outside ``src`` are skipped and counted."""
    src, out = Path(src), Path(out)
    _check_format(fmt)
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder")
    if not caption_ext.startswith("."):
        caption_ext = "." + caption_ext
    if _inside(out, src):
        raise DatasetError(f"{out} lies inside the source folder {src}; choose another --out")
    _check_target(out, overwrite, sources=[src])
    listed = next((src / name for name in METADATA_NAMES if (src / name).is_file()), None)
    with _building(out, overwrite) as tmp:
        if listed is not None:
            rows, skipped = _copy_listed(src, tmp, read_metadata(listed))
        else:
            rows, skipped = _copy_captioned(src, tmp, caption_ext)
        metadata = _write_metadata(tmp, rows, fmt)
    return ExportResult(out=out, count=len(rows), skipped=skipped,
                        metadata_path=out / metadata.name)


def read_metadata(path: Path) -> list[dict]:
    """The rows of a ``metadata.jsonl`` or ``metadata.csv`` (CSV values stay strings, with
    the formula-escaping ``'`` removed)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        return [{key: restore_cell(value) for key, value in row.items()}
                for row in csv.DictReader(io.StringIO(text))]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: a row must be a JSON object")
        rows.append(row)
    return rows


# -- records ----------------------------------------------------------------------------
def _export_record(record: RecordRow, blobs_dir: Path | Any, tmp: Path,
                   include_masks: bool) -> list[dict] | None:
    """Write one record's files; its rows, or None when a blob is missing (nothing of it
    is written then)."""
    outputs = [o for o in record.outputs if o.kind == "image"]
    if not outputs:
        return []  # nothing to train on (a prompt expansion, a failed job): not "skipped"
    images = [_read_blob(blobs_dir, o.sha256) for o in outputs]
    if any(data is None for data in images):
        return None
    extra: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if include_masks and record.endpoint in INPAINT_ENDPOINTS:
        inpaint = _inpaint_files(record, blobs_dir)
        if inpaint is None:
            return None
        files[f"masks/{record.id}.png"], files[f"inputs/{record.id}.png"] = inpaint
        extra = {"mask_file_name": f"masks/{record.id}.png",
                 "input_file_name": f"inputs/{record.id}.png"}
    rows = []
    for output, data in zip(outputs, images, strict=True):
        name = f"{record.id}_{output.index}.png"
        files[name] = data if data.startswith(_PNG_MAGIC) else _to_png(data)
        rows.append({"file_name": name, "text": record.prompt_used or record.prompt,
                     "record_id": record.id, "seed": output.seed, "endpoint": record.endpoint,
                     "model": record.model, "rating": record.feedback_rating,
                     "flags": list(record.feedback_flags or []), **extra})
    for name, data in files.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return rows


def _inpaint_files(record: RecordRow, blobs_dir: Path | Any) -> tuple[bytes, bytes] | None:
    """(mask PNG, input PNG) of an inpaint record. The mask is the one applied when the
    record has it, else the one sent, read with the request's mask convention."""
    image_data = _read_blob(blobs_dir, record.input_image_sha256)
    applied = _read_blob(blobs_dir, record.mask_applied_sha256)
    sent = None if applied is not None else _read_blob(blobs_dir, record.mask_sha256)
    if image_data is None or (applied is None and sent is None):
        return None
    try:
        if applied is not None:
            mask = Image.open(io.BytesIO(applied)).convert("L")
        else:
            with Image.open(io.BytesIO(image_data)) as image:
                size = image.size
            invert = bool((record.params or {}).get("invert_mask", False))
            mask = binary_mask(Image.open(io.BytesIO(sent)), size, invert=invert)
        mask_png = _png_bytes(mask)
        input_png = image_data if image_data.startswith(_PNG_MAGIC) else _to_png(image_data)
    except (OSError, ValueError, BildwerkError):
        return None
    return mask_png, input_png


def _blob_source(blobs_dir: Path | str, s3_endpoint_url: str | None) -> Path | Any:
    """A folder stays a ``Path``; a store URL becomes an obstore store (or the folder of a
    ``file://`` URL)."""
    if isinstance(blobs_dir, str) and "://" in blobs_dir:
        from app.persistence.blob_stores import check_reachable, open_store, parse_location

        location = parse_location(blobs_dir, s3_endpoint_url)
        if location.local_root is not None:
            return location.local_root
        check_reachable(location)
        return open_store(location)
    return Path(blobs_dir)


def _read_blob(blobs_dir: Path | Any, sha256: str | None) -> bytes | None:
    """The blob's bytes, or None when it is missing or its content does not match."""
    if not sha256 or not _SHA256.fullmatch(sha256.lower()):
        return None
    sha256 = sha256.lower()
    try:
        if isinstance(blobs_dir, Path):
            data = (blobs_dir / sha256[:2] / sha256).read_bytes()
        else:  # an obstore store
            import obstore

            data = bytes(obstore.get(blobs_dir, f"{sha256[:2]}/{sha256}").bytes())
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _to_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        mode = "RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"
        return _png_bytes(image.convert(mode))


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# -- folders ----------------------------------------------------------------------------
def _copy_listed(src: Path, tmp: Path, rows: list[dict]) -> tuple[list[dict], int]:
    kept, skipped = [], 0
    for row in rows:
        names = {key: value for key, value in row.items()
                 if (key == "file_name" or key.endswith("_file_name")) and value}
        if "file_name" not in names or not all(
                _safe_file(src, str(value)) for value in names.values()):
            skipped += 1
            continue
        row = dict(row)
        if not row.get("text"):  # none (or empty, as CSV says none): the caption file's
            caption = _caption_for(src / str(row["file_name"]), ".txt")
            if caption is not None:
                row["text"] = caption
            elif row.get("text") is None:
                skipped += 1
                continue
        for value in names.values():
            _copy(src / str(value), tmp / str(value))
        kept.append({"file_name": row.pop("file_name"), "text": row.pop("text"), **row})
    return kept, skipped


def _copy_captioned(src: Path, tmp: Path, caption_ext: str) -> tuple[list[dict], int]:
    rows, skipped = [], 0
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(src)
        if (not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES
                or any(part.startswith(".") for part in relative.parts)):
            continue
        caption = _caption_for(path, caption_ext)
        if caption is None or not _decodes(path):
            skipped += 1
            continue
        _copy(path, tmp / relative)
        rows.append({"file_name": relative.as_posix(), "text": caption})
    return rows, skipped


def _caption_for(image: Path, caption_ext: str) -> str | None:
    for candidate in (image.with_suffix(caption_ext), image.with_name(image.name + caption_ext)):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8-sig", errors="replace").strip()
    return None


def _safe_file(src: Path, name: str) -> bool:
    """A relative path that stays inside ``src`` and names a readable image file."""
    if Path(name).is_absolute() or "\\" in name:
        return False
    path = src / name
    return _inside(path, src) and path.is_file() and _decodes(path)


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # Pillow raises many kinds for broken files
        return False


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# -- writing ------------------------------------------------------------------------------
def _write_metadata(folder: Path, rows: list[dict], fmt: Format) -> Path:
    path = folder / f"metadata.{fmt}"
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return path
    columns = _columns(rows)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    return path


def _columns(rows: Iterable[dict]) -> list[str]:
    columns = dict.fromkeys(("file_name", "text"))
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _csv_value(value):
    """A cell: text made spreadsheet-safe; numbers as they are (``-2`` stays a number)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return safe_cell(";".join(str(v) for v in value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return safe_cell(value)


def _check_target(out: Path, overwrite: bool, sources: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite "
                                  "(overwrite=True) to replace it")
        for source in sources:
            if _inside(source, out):
                raise DatasetError(f"--overwrite would delete {source}, which lies in {out}")


@contextmanager
def _building(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder next to ``out``, renamed to ``out`` when the block succeeds and
    removed when it fails."""
    with replacing_folder(out, prefix=f".{out.name}.tmp-") as tmp:
        yield tmp
        _check_target(out, overwrite, sources=[])  # again: something may have appeared


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _checked_flags(flags: Iterable[str] | None, name: str) -> list[str]:
    if isinstance(flags, str):
        flags = [flags]
    checked = []
    for flag in flags or ():
        if not _FLAG.fullmatch(flag):
            raise DatasetError(f"{name}: {flag!r} is not a flag ([a-z0-9_], 1 to 32 chars)")
        checked.append(flag)
    return checked
