"""The base of every request model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

_CONTROL = {chr(c) for c in range(32)} - {"\n", "\r", "\t"}


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A timestamp in responses. We store UTC, but SQLite hands it back without its offset;
# this gives it back, so the JSON is an RFC 3339 date-time on every database.
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class RequestModel(BaseModel):
    """Forbids unknown fields and control characters (NUL …) in any text, which some
    databases cannot store and no prompt needs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data):
        _check(data, "")
        return data


def _check(value, path: str) -> None:
    if isinstance(value, str):
        if any(ch in _CONTROL for ch in value[:100_000]):
            raise ValueError(f"{path or 'text'} contains control characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in ("image", "mask"):
                continue
            _check(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for item in value:
            _check(item, path)
