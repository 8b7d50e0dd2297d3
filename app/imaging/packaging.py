"""Package a frame sequence: zip of PNGs, sprite sheet, strip, animated GIF/WebP, MP4.

The MP4 is encoded with PyAV, whose wheels ship FFmpeg (libx264), so nothing is
downloaded at install or run time.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class NamedFrame:
    name: str
    png: bytes
    image: Image.Image


@dataclass(frozen=True)
class Package:
    kind: str
    name: str
    content_type: str
    data: bytes


def make_zip(frames: list[NamedFrame], fps: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for frame in frames:
            info = zipfile.ZipInfo(frame.name, date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, frame.png)
    return buf.getvalue()


def make_grid(frames: list[NamedFrame], columns: int) -> bytes:
    w, h = frames[0].image.size
    rows = math.ceil(len(frames) / columns)
    sheet = Image.new("RGB", (w * columns, h * rows), (0, 0, 0))
    for i, frame in enumerate(frames):
        sheet.paste(frame.image.convert("RGB"), ((i % columns) * w, (i // columns) * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


GRID_COLUMNS: dict[str, Callable[[int], int]] = {
    "sheet": lambda count: math.ceil(math.sqrt(count)),  # about square
    "strip": lambda count: count,  # one row
}


def canvas_size(kind: str, count: int, width: int, height: int) -> tuple[int, int] | None:
    """The (width, height) of the one image a ``sheet`` or ``strip`` of ``count`` frames of
    ``width`` x ``height`` is drawn on; None for the other kinds."""
    if kind not in GRID_COLUMNS:
        return None
    columns = GRID_COLUMNS[kind](count)
    return width * columns, height * math.ceil(count / columns)


def make_sheet(frames: list[NamedFrame], fps: int) -> bytes:
    return make_grid(frames, GRID_COLUMNS["sheet"](len(frames)))


def make_strip(frames: list[NamedFrame], fps: int) -> bytes:
    return make_grid(frames, GRID_COLUMNS["strip"](len(frames)))


def _animated(frames: list[NamedFrame], fps: int, fmt: str, **options) -> bytes:
    images = [f.image.convert("RGB") for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format=fmt, save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, **options)
    return buf.getvalue()


def make_gif(frames: list[NamedFrame], fps: int) -> bytes:
    return _animated(frames, fps, "GIF", disposal=1, optimize=False)


def make_webp(frames: list[NamedFrame], fps: int) -> bytes:
    return _animated(frames, fps, "WEBP", lossless=True)


def make_mp4(frames: list[NamedFrame], fps: int) -> bytes:
    import av

    w, h = frames[0].image.size
    w2, h2 = w + w % 2, h + h % 2  # yuv420p needs even sizes
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            image = frame.image.convert("RGB")
            if (w2, h2) != (w, h):
                padded = Image.new("RGB", (w2, h2))
                padded.paste(image, (0, 0))
                image = padded
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


PACKAGERS: dict[str, tuple[str, str, Callable[[list[NamedFrame], int], bytes]]] = {
    "zip": ("frames.zip", "application/zip", make_zip),
    "sheet": ("sheet.png", "image/png", make_sheet),
    "strip": ("strip.png", "image/png", make_strip),
    "gif": ("sequence.gif", "image/gif", make_gif),
    "webp": ("sequence.webp", "image/webp", make_webp),
    "mp4": ("sequence.mp4", "video/mp4", make_mp4),
}
PACKAGE_KINDS = tuple(PACKAGERS)


def package(kind: str, frames: list[NamedFrame], fps: int) -> Package:
    name, content_type, make = PACKAGERS[kind]
    return Package(kind=kind, name=name, content_type=content_type, data=make(frames, fps))
