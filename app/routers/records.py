"""GET /records and GET /records/{id}: the history of every request; POST
/records/{id}/feedback: rate, flag and comment on one (for training sets)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query

from app.deps import RecordsDep
from app.persistence.records import RecordFilter
from app.schemas.errors import BAD_BODY, error_responses
from app.schemas.records import (
    FEEDBACK_EXAMPLES,
    FLAG_PATTERN,
    MAX_FLAGS,
    FeedbackRequest,
    Record,
    RecordPage,
)
from app.security.auth import PrincipalDep, require

# app/main.py lets `read` or `generate` keys into this router; reading records needs
# `read`, feedback either (kiosk staff tablets and the Blender add-on hold generate keys).
router = APIRouter(prefix="/records", tags=["records"])
READ = [Depends(require("read"))]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted",
                 "rejected"]


@router.get("", response_model=RecordPage, summary="List records, newest first",
            dependencies=READ)
def list_records(
    records: RecordsDep,
    principal: PrincipalDep,
    endpoint: Annotated[str | None, Query(max_length=32, examples=["txt2img"])] = None,
    status: Status | None = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601)")] = None,
    min_rating: Annotated[int | None, Query(ge=1, le=5, description="feedback rating at "
                                            "least this (unrated records are left out)")] = None,
    flag: Annotated[list[Annotated[str, Query(pattern=FLAG_PATTERN)]] | None, Query(
        max_length=MAX_FLAGS, description="a feedback flag the record must carry; repeat "
        "for several (all must be present)", examples=[["use_for_training"]])] = None,
    has_feedback: Annotated[bool | None, Query(description="true: only records with "
                                               "feedback; false: only those without")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> RecordPage:
    """A key without `admin` sees only the records it made."""
    rows, total = records.list(RecordFilter(
        endpoint=endpoint, status=status, since=since, until=until,
        api_key_id=principal.owner, min_rating=min_rating, flags=tuple(flag or ()),
        has_feedback=has_feedback, limit=limit, offset=offset))
    return RecordPage(items=[Record.model_validate(r) for r in rows], total=total,
                      limit=limit, offset=offset)


@router.get("/{record_id}", response_model=Record, summary="One record", dependencies=READ,
            responses=error_responses(_404="Unknown record."))
def get_record(record_id: str, records: RecordsDep, principal: PrincipalDep) -> Record:
    """Another key's record is a 404, like an unknown one (admin sees all)."""
    return Record.model_validate(records.get(record_id, api_key_id=principal.owner))


@router.post("/{record_id}/feedback", response_model=Record,
             summary="Rate, flag or comment on a record",
             responses={**BAD_BODY, **error_responses(_404="Unknown record.")})
def give_feedback(
    record_id: str,
    body: Annotated[FeedbackRequest, Body(openapi_examples=FEEDBACK_EXAMPLES)],
    records: RecordsDep,
    principal: PrincipalDep,
) -> Record:
    """Store feedback with the record and answer the updated record. Feedback replaces
    any earlier feedback on the record as a whole (a field left out is cleared). A
    `generate` or `read` key rates its own records (another key's is a 404, like an
    unknown one); `admin` rates any. The record of a failed request can be rated too.
    Filter with `GET /records?min_rating=4&flag=use_for_training`; `bildwerk dataset
    export` turns rated records into a training set."""
    row = records.set_feedback(
        record_id, rating=body.rating, flags=list(dict.fromkeys(body.flags or ())),
        comment=body.comment, key_id=principal.key_id, api_key_id=principal.owner)
    return Record.model_validate(row)
