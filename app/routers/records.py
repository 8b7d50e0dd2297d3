"""GET /records and GET /records/{id}: the history of every request."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.deps import RecordsDep
from app.persistence.records import RecordFilter
from app.schemas.errors import error_responses
from app.schemas.records import Record, RecordPage

router = APIRouter(prefix="/records", tags=["records"])
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted",
                 "rejected"]


@router.get("", response_model=RecordPage, summary="List records, newest first")
def list_records(
    records: RecordsDep,
    endpoint: Annotated[str | None, Query(max_length=32, examples=["txt2img"])] = None,
    status: Status | None = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RecordPage:
    rows, total = records.list(RecordFilter(endpoint=endpoint, status=status, since=since,
                                            until=until, limit=limit, offset=offset))
    return RecordPage(items=[Record.model_validate(r) for r in rows], total=total,
                      limit=limit, offset=offset)


@router.get("/{record_id}", response_model=Record, summary="One record",
            responses=error_responses(_404="Unknown record."))
def get_record(record_id: str, records: RecordsDep) -> Record:
    return Record.model_validate(records.get(record_id))
