"""PNG encoding with the generation parameters embedded.

Two text chunks: ``parameters`` in AUTOMATIC1111's format (readable by its PNG-info tab
and most image browsers) and ``bildwerk`` holding the same facts as JSON. Only the
deterministic inputs go in, so the same request and seed give the same bytes.

``parameters`` is line-based (prompt, ``Negative prompt: …``, then ``Steps: …, Sampler: …``),
so a prompt with a newline could forge lines that readers take for parameters. Its free
text is therefore written on one line (:func:`one_line`): newline, carriage return and tab
become the two characters ``\\n``, ``\\r``, ``\\t``, and any other control character
(C0, DEL, C1, U+2028/U+2029) ``\\xNN`` or ``\\uNNNN``. Backslashes are left alone (A1111
prompts use ``\\(`` for literal brackets). A value on the last line that contains ``,``,
``:`` or ``"`` is JSON-quoted, as AUTOMATIC1111 itself does. The ``bildwerk`` JSON chunk
keeps the exact text.
"""

from __future__ import annotations

import io
import json
import re

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """``text`` with every control character escaped, so it cannot start a new line."""
    return _CONTROL.sub(_escape_control, text)


def _escape_control(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def field_value(value):
    """A value of the fields line: free text escaped onto one line, JSON-quoted when it
    holds , : or " (as AUTOMATIC1111 quotes it); anything else as it is."""
    if not isinstance(value, str):
        return value
    value = one_line(value)
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:"') else value


def a1111_parameters(meta: dict) -> str:
    """The ``parameters`` text: the prompt line, an optional ``Negative prompt:`` line and
    the fields line, each free text escaped onto its one line."""
    lines = [one_line(meta.get("prompt") or "")]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {one_line(meta['negative_prompt'])}")
    fields = [
        ("Steps", meta.get("steps")),
        ("Sampler", meta.get("scheduler")),
        ("CFG scale", meta.get("guidance_scale")),
        ("Seed", meta.get("seed")),
        ("Size", f"{meta['width']}x{meta['height']}" if "width" in meta else None),
        ("Model", meta.get("model")),
        ("Denoising strength", meta.get("strength")),
        ("Mask blur", meta.get("mask_blur")),
    ]
    lines.append(", ".join(f"{k}: {field_value(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def encode_png(image: Image.Image, meta: dict) -> bytes:
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(meta))
    info.add_itxt("bildwerk", json.dumps(meta, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def encode_upscaled_png(image: Image.Image, meta: dict) -> bytes:
    """An upscaled image: ``parameters`` as AUTOMATIC1111's extras tab writes it
    (``Postprocess upscaler: …, Postprocess upscale by: …``), and the ``bildwerk`` chunk."""
    info = PngInfo()
    scale = meta.get("scale")
    text = f"Postprocess upscaler: {field_value(meta['upscaler'])}"
    text += f", Postprocess upscale by: {scale:g}" if scale else \
        f", Postprocess upscale to: {meta['width']}x{meta['height']}"
    info.add_text("parameters", text)
    info.add_itxt("bildwerk", json.dumps(meta, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def encode_plain_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()
