"""Processing sizes. (Inpaint's crop-and-paste geometry is :mod:`app.imaging.inpaint_region`.)"""

from __future__ import annotations


def round_to_multiple(value: int, multiple: int = 8, minimum: int = 64) -> int:
    return max(minimum, (value // multiple) * multiple)
