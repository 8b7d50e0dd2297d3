"""Bounds on the shape of a JSON document, checked on the raw bytes before anything builds
Python objects from them.

``json.loads`` (and pydantic after it) turns every ``[]`` of a body into an object, and
pydantic builds one validation error per bad item: a 31 MiB ``[[],[],…]`` costs
gigabytes before any limit of the request model is looked at. :func:`check_json_shape`
walks the document as a stream of events instead (ijson's C backend, in bounded chunks),
keeps only a stack of counters, and stops at the first bound crossed. No request of this
API comes close to the defaults: its deepest body is 4 levels, its longest list one entry
per frame (at most ``BILDWERK_MAX_FRAMES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import ijson

from app.errors import InvalidInput, InvalidJson, json_error_message


@dataclass(frozen=True)
class JsonShape:
    max_depth: int = 16  # nested lists/objects
    max_items: int = 1024  # entries of one list or object
    max_values: int = 20_000  # values in the whole document (containers and scalars)


class NotJson(InvalidInput):
    """The text is not JSON at all (a form field may then be plain text)."""


_SMALL_CHUNK = 256 * 1024
_OPEN = {"start_map", "start_array"}
_CLOSE = {"end_map", "end_array"}


def check_json_shape(data: bytes | str, shape: JsonShape, what: str = "body") -> None:
    """422 ``invalid_input`` when ``data`` crosses a bound of ``shape`` or, as a form
    field, is not JSON; ``param`` names where (``motion.zoom``). A whole body that is not
    JSON is a 400 ``invalid_json`` naming the line and column."""
    raw = data.encode() if isinstance(data, str) else data
    # ijson reads in chunks and yields each chunk's events at once. Few structural bytes
    # (``[``, ``{``, ``,``; base64 images have none) bound the events, so one chunk is safe
    # and fast for long strings; many may be hostile, so small chunks let the walk stop
    # early.
    structural = raw.count(b"[") + raw.count(b"{") + raw.count(b",")
    chunk = len(raw) + 1 if structural <= shape.max_values else _SMALL_CHUNK
    counts: list[int] = []  # entries so far of each open container, outermost first
    paths: list[str] = []  # and where each one is
    values = 0
    where = ""  # the path the walk reached, for a syntax error's param
    try:
        for prefix, event, value in ijson.parse(raw, buf_size=chunk, use_float=True):
            where = f"{prefix}.{value}" if event == "map_key" else prefix
            if event in _CLOSE:
                counts.pop()
                paths.pop()
                continue
            if event == "map_key":
                continue
            values += 1
            if counts:
                counts[-1] += 1
                if counts[-1] > shape.max_items:
                    raise _too_many(what, paths[-1], shape.max_items)
            if values > shape.max_values:
                raise InvalidInput(f"the {what} holds more than {shape.max_values} JSON "
                                   "values", param=_param(prefix))
            if event in _OPEN:
                counts.append(0)
                paths.append(prefix)
                if len(counts) > shape.max_depth:
                    raise InvalidInput(f"the {what} nests deeper than {shape.max_depth} "
                                       "levels", param=_param(prefix))
    except ijson.JSONError as exc:
        hint = " (NaN and Infinity are not JSON numbers)" if re.search(
            rb"(?<![\w\"])-?(NaN|Infinity)\b", raw) else ""
        if what == "body" and not hint:  # the whole body: 400, saying where it breaks
            raise InvalidJson(json_error_message(raw) + hint) from None
        raise NotJson(f"the {what} is not valid JSON{hint}: {_first_line(exc)}",
                      param=_param(where)) from None


def _too_many(what: str, prefix: str, limit: int) -> InvalidInput:
    where = _param(prefix)
    return InvalidInput(f"{where or 'the ' + what}: a list or object may hold at most {limit} "
                        "entries", param=where)


def _param(prefix: str) -> str | None:
    """ijson's ``motion.zoom.item`` as the field path ``motion.zoom``."""
    parts = [p for p in prefix.split(".") if p and p != "item"]
    return ".".join(parts) or None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
