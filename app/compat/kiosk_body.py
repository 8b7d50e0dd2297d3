"""The kiosk backend writes its JSON by hand.

Its Java services format the body as a string, without escaping the wish::

    {"prompt":"<wish>","image":"<data-URL>","mask":"<data-URL>"}
    {"prompt":"<wish>","image":"<data-URL>","mask":"<data-URL>","model":0,"guidance_scale":7}

A wish with a double quote, a backslash or a line break (``Ein "grüner" Platz``) makes
that body invalid JSON, and its original server answered 422 "JSON decode error". Since
the images are base64 (no quotes) and the order of the fields is fixed, the fields can be
read back unambiguously: :func:`repair_kiosk_body` does exactly that for
``POST /inpainting/``, and for nothing else. Any other invalid body stays a 400.
"""

from __future__ import annotations

import json
import re

_HAND_WRITTEN = re.compile(
    rb'\A\s*\{"prompt":"(?P<prompt>.*)","image":"(?P<image>[^"]*)","mask":"(?P<mask>[^"]*)"'
    rb'(?:,"model":(?P<model>-?\d{1,9}),"guidance_scale":(?P<guidance>-?\d{1,9}(?:\.\d+)?))?'
    rb'\}\s*\Z', re.S)


def repair_kiosk_body(raw: bytes) -> bytes | None:
    """The kiosk's hand-written body as valid JSON, or None when ``raw`` is not one."""
    match = _HAND_WRITTEN.match(raw)
    if match is None:
        return None
    try:
        prompt = match["prompt"].decode("utf-8")
    except UnicodeDecodeError:
        return None
    body: dict = {"prompt": prompt, "image": match["image"].decode("ascii", "replace"),
                  "mask": match["mask"].decode("ascii", "replace")}
    if match["model"] is not None:
        body["model"] = int(match["model"])
        body["guidance_scale"] = float(match["guidance"])
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
