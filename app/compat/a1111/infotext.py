"""AUTOMATIC1111's text about a generation: the ``info`` JSON string of a txt2img/img2img
answer, one infotext per image, and the parser behind POST /png-info.

An infotext is the ``parameters`` text AUTOMATIC1111 writes into its PNGs: the prompt line,
``Negative prompt: …``, then ``Steps: 20, Sampler: …, Seed: …`` on the last line. The
first part comes from :func:`app.imaging.png.a1111_parameters` (the writer of our own PNGs'
``parameters`` chunk); the fields AUTOMATIC1111 adds after it (schedule type, model hash,
clip skip, …) are appended in the same notation.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from PIL import Image

from app.imaging.png import a1111_parameters, field_value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"bildwerk-{version('bildwerk')}"
    except PackageNotFoundError:
        return "bildwerk"


VERSION = _version()
# "Key: value" pairs of the last line; a value is JSON-quoted when it holds , : or ".
# The key is bounded (and no leading \s*): unbounded, a long line without ':' made
# findall quadratic, which held the GIL for seconds. Each alternative of the quoted value
# starts with a different character, so it never backtracks more than once.
_FIELD = re.compile(r'(\w[\w \-/+]{0,63}):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
MAX_PARSED_CHARS = 64 * 1024  # a longer infotext is answered, but not parsed
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_MIN_FIELDS = 3  # a last line with fewer "Key: value" pairs is part of the prompt
# Pillow's bookkeeping in Image.info that is no text chunk of the file
_NOT_TEXT = {"dpi", "gamma", "transparency", "icc_profile", "exif", "jfif", "jfif_version",
             "jfif_unit", "jfif_density", "progressive", "progression", "loop", "duration",
             "background", "timestamp", "chromaticity", "photoshop", "aspect", "srgb"}


def infotext(*, prompt: str, negative_prompt: str, steps: int, sampler: str, schedule: str,
             cfg_scale: float, seed: int, width: int, height: int, model: str | None,
             model_hash: str | None, denoising_strength: float | None = None,
             mask_blur: int | None = None, clip_skip: int = 1, vae: str | None = None,
             extra: dict[str, Any] | None = None) -> str:
    """One image's infotext, as AUTOMATIC1111 writes it."""
    text = a1111_parameters({
        "prompt": prompt, "negative_prompt": negative_prompt, "steps": steps,
        "scheduler": sampler, "guidance_scale": cfg_scale, "seed": seed, "width": width,
        "height": height, "model": model, "strength": denoising_strength,
        "mask_blur": mask_blur})
    more = {"Schedule type": schedule, "Model hash": model_hash, "VAE": vae,
            "Clip skip": clip_skip if clip_skip > 1 else None, **(extra or {}),
            "Version": VERSION}
    return text + "".join(f", {k}: {field_value(str(v))}" for k, v in more.items()
                          if v is not None)


def generation_info(**fields: Any) -> str:
    """The ``info`` string: AUTOMATIC1111's ``Processed.js()`` keys, plus ours."""
    return json.dumps(fields, ensure_ascii=False, default=lambda o: None)


def job_timestamp(when: datetime | None) -> str:
    return (when or datetime.now()).strftime("%Y%m%d%H%M%S")


# -- PNG info -------------------------------------------------------------------------------
def read_image_text(image: Image.Image) -> tuple[str, dict[str, str]]:
    """(the ``parameters`` text or "", the image's other text chunks)."""
    items: dict[str, str] = {}
    for key, value in (image.info or {}).items():
        if not isinstance(key, str) or key.lower() in _NOT_TEXT:
            continue
        if isinstance(value, bytes | bytearray):
            continue
        items[key] = value if isinstance(value, str) else str(value)
    geninfo = items.pop("parameters", None)
    if geninfo is None:
        geninfo = _exif_user_comment(image)
    return geninfo or "", items


def _exif_user_comment(image: Image.Image) -> str | None:
    """JPEG/WebP: AUTOMATIC1111 puts the infotext into EXIF's UserComment."""
    try:
        raw = image.getexif().get_ifd(0x8769).get(0x9286)
    except Exception:
        return None
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes | bytearray) or len(raw) < 8:
        return None
    head, body = bytes(raw[:8]), bytes(raw[8:])
    for encoding in (("utf-16-be", "utf-16-le") if head.startswith(b"UNICODE") else
                     ("ascii", "utf-8") if head.startswith(b"ASCII") else ("utf-8",)):
        try:
            return body.decode(encoding).rstrip("\x00")
        except UnicodeDecodeError:
            continue
    return None


def parse_infotext(text: str) -> dict[str, Any]:
    """An infotext into AUTOMATIC1111's PNG-info fields: ``Prompt``, ``Negative prompt``
    and one entry per ``Key: value`` of the last line (strings, quotes removed; ``Size``
    as ``Size-1`` and ``Size-2``). A text longer than :data:`MAX_PARSED_CHARS` is not
    parsed: ``{}``."""
    if len(text) > MAX_PARSED_CHARS:
        return {}
    lines = text.strip().split("\n") if text.strip() else []
    fields: list[tuple[str, str]] = []
    if lines:
        found = _FIELD.findall(lines[-1])
        if len(found) >= _MIN_FIELDS:
            fields = found
            lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    out: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in fields:
        key, value = key.strip(), raw.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        size = _SIZE.match(value) if isinstance(value, str) else None
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = size.group(1), size.group(2)
        else:
            out[key] = value
    out.setdefault("Clip skip", "1")
    _normalise_sampler(out)
    return out


def _normalise_sampler(fields: dict[str, Any]) -> None:
    """``Sampler: DPM++ 2M Karras`` (or our ``dpmpp_2m_karras``) -> sampler and schedule,
    as AUTOMATIC1111 1.9+ splits them."""
    from app.compat.a1111.samplers import SamplerNotFound, resolve

    sampler = fields.get("Sampler")
    if not isinstance(sampler, str) or not sampler:
        return
    try:
        resolved = resolve(sampler, None, fields.get("Schedule type"))
    except SamplerNotFound:
        return
    fields["Sampler"] = resolved.sampler
    fields.setdefault("Schedule type", resolved.schedule)
