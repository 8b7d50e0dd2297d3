"""Per-frame schedules: a constant, one value per frame, or keyframes ``{frame: value}``
interpolated linearly (held constant before the first and after the last keyframe)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence

from app.errors import InvalidInput

Schedule = float | Sequence[float] | Mapping[int, float]


def expand(spec: Schedule, frames: int, param: str) -> list[float]:
    """The value of ``spec`` for each of ``frames`` frames."""
    if isinstance(spec, int | float):
        return [float(spec)] * frames
    if isinstance(spec, Mapping):
        keys = check_keyframes(spec, frames, param)
        return [_interpolate(keys, {int(k): float(v) for k, v in spec.items()}, i)
                for i in range(frames)]
    values = [float(v) for v in spec]
    if len(values) != frames:
        raise InvalidInput(f"{param} has {len(values)} values for {frames} frames", param=param)
    return values


def check_keyframes(spec: Mapping, frames: int, param: str) -> list[int]:
    if not spec:
        raise InvalidInput(f"{param} needs at least one keyframe", param=param)
    keys = sorted(int(k) for k in spec)
    if keys[0] < 0 or keys[-1] >= frames:
        raise InvalidInput(f"{param} keyframes must lie in 0..{frames - 1}", param=param)
    return keys


def _interpolate(keys: list[int], values: dict[int, float], frame: int) -> float:
    lo, hi, t = bracket(keys, frame)
    return values[lo] + (values[hi] - values[lo]) * t


def bracket(keys: list[int], frame: int) -> tuple[int, int, float]:
    """The keyframes around ``frame`` and how far (0..1) it lies from the first to the
    second."""
    pos = bisect_right(keys, frame)
    if pos == 0:
        return keys[0], keys[0], 0.0
    lo = keys[pos - 1]
    if pos == len(keys) or lo == frame:
        return lo, lo, 0.0
    hi = keys[pos]
    return lo, hi, (frame - lo) / (hi - lo)
