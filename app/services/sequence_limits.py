"""How much work one /img2seq request may ask for, checked before anything is queued.

Both answer 413 ``payload_too_large`` (as a /txt2img batch over ``max_batch_pixels`` does),
naming the numbers and the setting to raise.
"""

from __future__ import annotations

from app.errors import PayloadTooLarge
from app.imaging.packaging import canvas_size


def check_sequence_work(frames: int, width: int, height: int, steps: int,
                        max_work: int) -> None:
    """frames x width x height x steps must not exceed ``max_work``
    (``BILDWERK_MAX_SEQUENCE_WORK``)."""
    work = frames * width * height * steps
    if work > max_work:
        raise PayloadTooLarge(
            f"{frames} frames of {width}x{height} at {steps} steps are {work:,} pixel-steps, "
            f"more than the sequence budget of {max_work:,} (BILDWERK_MAX_SEQUENCE_WORK); "
            "ask for fewer frames or steps, or a smaller size", param="frames")


def check_package_canvas(kinds: list[str], frames: int, width: int, height: int,
                         max_pixels: int) -> None:
    """A ``strip`` or ``sheet`` package is one image of all the frames: its canvas must
    not exceed ``max_pixels`` (``BILDWERK_MAX_CANVAS_PIXELS``)."""
    for kind in dict.fromkeys(kinds):
        size = canvas_size(kind, frames, width, height)
        if size is not None and size[0] * size[1] > max_pixels:
            raise PayloadTooLarge(
                f"a {kind} of {frames} frames of {width}x{height} would be a "
                f"{size[0]}x{size[1]} image ({size[0] * size[1]:,} pixels), more than "
                f"{max_pixels:,} (BILDWERK_MAX_CANVAS_PIXELS); leave out {kind} or ask for "
                "fewer or smaller frames", param="packages")
