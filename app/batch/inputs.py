"""Prompt files into ``POST /txt2img`` requests.

Accepted inputs:

- one prompt (:func:`single_item`);
- ``.csv`` with a header: a ``prompt`` column, optional columns named like the fields of
  ``POST /txt2img`` (``negative_prompt``, ``seed``, ``steps``, ``width``, ``height``,
  ``guidance_scale``, ``num_images``, ``scheduler``, ``model``, ...), and ``title``,
  ``description``, ``metatags`` kept as notes (the CSV of ``bildwerk prompts``). Cells
  escaped against spreadsheet formulas (a leading ``'``) are read back as written;
- ``.jsonl`` / ``.ndjson``: one object per line with the same keys. A line written by
  ``bildwerk prompts`` (it has ``params``, ``scene`` or ``language_detected``) is read as
  an expanded prompt: its ``prompt`` and ``negative_prompt`` are used and its ``params``
  are the style's recommendations; its ``seed``, ``provider`` and ``style`` describe the
  expansion, not the picture, and are not sent;
- ``.txt``: one prompt per non-empty line.

Precedence, lowest first: the server's defaults, a ``bildwerk prompts`` line's
recommended ``params``, the command line's options, the row's own columns.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.csv_cells import restore_cell


class InputError(ValueError):
    """The prompts cannot be read: a missing file, an unknown format, a bad cell. The
    message names the file and line."""


def _integer(value) -> int:
    if isinstance(value, bool):
        raise ValueError("a flag")
    if isinstance(value, int):
        return value
    number = float(value) if isinstance(value, float) else float(str(value).strip())
    if not number.is_integer():
        raise ValueError("not whole")
    return int(number)


def _number(value) -> float:
    if isinstance(value, bool):
        raise ValueError("a flag")
    return float(value) if isinstance(value, int | float) else float(str(value).strip())


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError("not true or false")


def _text(value) -> str:
    if isinstance(value, dict | list):
        raise ValueError("not text")
    return str(value)


def _loras(value) -> list:
    """A list of ``{"name", "weight"}``: JSON (a list, or its text), or ``NAME[:WEIGHT]``
    items separated by commas (``film-grain:0.7, watercolor``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            return [parse_lora(part) for part in text.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError("not a list of LoRAs")
    return [parse_lora(v) if isinstance(v, str) else v for v in value]


def parse_lora(text: str) -> dict:
    """``NAME`` or ``NAME:WEIGHT`` as a LoRA reference of ``POST /txt2img``."""
    name, _, weight = text.strip().partition(":")
    if not name:
        raise ValueError(f"{text!r} is not NAME or NAME:WEIGHT")
    return {"name": name, "weight": float(weight)} if weight else {"name": name}


# The fields of POST /txt2img a row may set, each with its converter.
REQUEST_FIELDS = {
    "prompt": _text, "negative_prompt": _text, "width": _integer, "height": _integer,
    "steps": _integer, "guidance_scale": _number, "seed": _integer, "num_images": _integer,
    "scheduler": _text, "model": _text, "provider": _text, "vae": _text,
    "clip_skip": _integer, "loras": _loras, "style": _text, "translate": _flag,
    "expand_prompt": _flag,
}
_KINDS = {_text: "text", _integer: "a whole number", _number: "a number",
          _flag: "true or false", _loras: 'LoRAs (JSON, or "NAME:WEIGHT, NAME")'}
NOTE_FIELDS = ("title", "description", "metatags")
# What a `bildwerk prompts` JSON line carries besides the prompt: about the expansion.
_EXPANSION_FIELDS = {"scene", "language_detected", "translated_text", "translator",
                     "provider", "seed",
                     "style", "truncated", "params"}
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}


@dataclass(frozen=True)
class BatchItem:
    """One request of the batch.

    Args:
        index (`int`): 1-based position in the input; names the files and keys resume.
        request (`dict`): the JSON body of ``POST /txt2img``, only the fields that are set.
        notes (`dict`): ``title``, ``description``, ``metatags`` when the input has them.
        source (`str`): where it came from, e.g. ``prompts.csv:4`` or ``argument``.
    """

    index: int
    request: dict
    notes: dict = field(default_factory=dict)
    source: str = "argument"

    @property
    def key(self) -> str:
        """A fingerprint of the request: the same request gives the same key, so a re-run
        knows which items it already made."""
        text = json.dumps(self.request, sort_keys=True, ensure_ascii=False,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def num_images(self) -> int:
        return int(self.request.get("num_images") or 1)


def single_item(prompt: str, options: Mapping) -> BatchItem:
    """The one item of ``bildwerk generate "a lighthouse"``."""
    if not prompt.strip():
        raise InputError("the prompt is empty")
    return BatchItem(1, _merge({}, options, {"prompt": prompt}))


def read_items(path: Path, options: Mapping) -> tuple[list[BatchItem], list[str]]:
    """The items of a prompt file, and warnings (e.g. columns that are not request fields).

    Args:
        path (`Path`): a ``.csv``, ``.jsonl``/``.ndjson`` or ``.txt`` file.
        options (`Mapping`): request fields from the command line (only those given);
            they override a ``bildwerk prompts`` line's recommended ``params`` and are
            overridden by the row's own columns.

    Raises:
        InputError: the file is missing or unreadable, or a row is bad (names file:line).
    """
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown prompt file type {path.suffix!r}; use .csv, "
                         ".jsonl or .txt")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "txt": _txt_rows}[kind](text, path)
    items: list[BatchItem] = []
    unknown: set[str] = set()
    for line, row in rows:
        where = f"{path.name}:{line}"
        try:
            items.append(_item(len(items) + 1, row, options, where, unknown))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}:{line}: {exc}") from exc
    if not items:
        raise InputError(f"{path} holds no prompts")
    warnings = [f"{path}: ignoring {'column' if kind == 'csv' else 'field'}s that are not "
                f"POST /txt2img fields: {', '.join(sorted(unknown))}"] if unknown else []
    return items, warnings


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines(), skipinitialspace=False)
    if not reader.fieldnames or "prompt" not in [_column(c) for c in reader.fieldnames]:
        raise InputError(f"{path}: the first line must be a header with a 'prompt' column "
                         f"(found: {', '.join(reader.fieldnames or []) or 'nothing'})")
    for row in reader:
        cells = {_column(k): restore_cell(v) for k, v in row.items()
                 if k is not None and v is not None and v.strip() != ""}
        if cells:
            yield reader.line_num, cells


def _column(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object per line")
        yield number, row


def _txt_rows(text: str, path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, {"prompt": line.strip()}


def _item(index: int, row: Mapping, options: Mapping, where: str,
          unknown: set[str]) -> BatchItem:
    exported = bool({"params", "scene", "language_detected"} & set(row))
    recommended: dict = {}
    own: dict = {}
    if exported:  # a `bildwerk prompts` line
        params = row.get("params") or {}
        recommended = _fields(params, set()) if isinstance(params, dict) else {}
        own = _fields({k: row[k] for k in ("prompt", "negative_prompt") if k in row}, set())
        unknown.update(set(row) - _EXPANSION_FIELDS - set(REQUEST_FIELDS) - set(NOTE_FIELDS))
    else:
        own = _fields({k: v for k, v in row.items() if k not in NOTE_FIELDS}, unknown)
    request = _merge(recommended, options, own)
    if not str(request.get("prompt") or "").strip():
        raise ValueError("no prompt")
    notes = {k: _note(row[k]) for k in NOTE_FIELDS if row.get(k) not in (None, "", [])}
    return BatchItem(index, request, notes, where)


def _fields(values: Mapping, unknown: set[str]) -> dict:
    out = {}
    for name, value in values.items():
        key = _column(str(name))
        if key not in REQUEST_FIELDS:
            unknown.add(str(name))
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        convert = REQUEST_FIELDS[key]
        try:
            out[key] = convert(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{key}: {value!r} is not {_KINDS[convert]}") from exc
    return out


def _note(value):
    return value if isinstance(value, str | list) else str(value)


def _merge(*layers: Mapping) -> dict:
    request: dict = {}
    for layer in layers:
        request.update({k: v for k, v in layer.items() if v is not None})
    return request
