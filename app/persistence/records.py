"""Record repository: the only place that queries the ``records`` tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from app.errors import NotFound
from app.persistence.database import Database
from app.persistence.orm import OutputRow, RecordRow


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class NewRecord:
    """What is known when a request is accepted."""

    id: str
    job_id: str
    endpoint: str
    provider: str
    model: str | None
    prompt: str  # as the client typed it
    negative_prompt: str | None
    params: dict
    prompt_translated: str | None = None
    prompt_expanded: str | None = None
    scheduler: str | None = None
    loras: list | None = None
    vae: str | None = None
    client: dict | None = None
    input_image_sha256: str | None = None
    mask_sha256: str | None = None


@dataclass
class OutputImage:
    """An output to record: an image, a sequence frame, or a package (no seed/size)."""

    sha256: str
    seed: int | None
    width: int | None
    height: int | None
    kind: str = "image"
    name: str | None = None
    prompt: str | None = None
    strength: float | None = None
    content_type: str | None = "image/png"


@dataclass
class RecordFilter:
    endpoint: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


class RecordRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, new: NewRecord) -> None:
        with self.db.session() as s:
            s.add(RecordRow(
                id=new.id, job_id=new.job_id, endpoint=new.endpoint, status="queued",
                provider=new.provider, model=new.model, loras=new.loras, vae=new.vae,
                scheduler=new.scheduler, prompt=new.prompt, negative_prompt=new.negative_prompt,
                prompt_translated=new.prompt_translated, prompt_expanded=new.prompt_expanded,
                params=new.params, client=new.client, input_image_sha256=new.input_image_sha256,
                mask_sha256=new.mask_sha256, created_at=_now()))

    def mark_running(self, record_id: str) -> None:
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is not None:
                row.status = "running"
                row.started_at = _now()

    def finish(
        self,
        record_id: str,
        *,
        status: str,
        outputs: list[OutputImage] = (),  # type: ignore[assignment]
        seeds: list[int] | None = None,
        timings: dict | None = None,
        prompt_used: str | None = None,
        model: str | None = None,
        mask_applied_sha256: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        provider: str | None = None,
        attempts: list | None = None,
        usage: dict | None = None,
        result: dict | None = None,
        prompt_translated: str | None = None,
        prompt_expanded: str | None = None,
    ) -> None:
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None:
                return
            row.status = status
            row.finished_at = _now()
            known = {"seeds": seeds, "timings": timings, "prompt_used": prompt_used,
                     "model": model, "mask_applied_sha256": mask_applied_sha256,
                     "provider": provider, "attempts": attempts, "usage": usage,
                     "result": result, "prompt_translated": prompt_translated,
                     "prompt_expanded": prompt_expanded}
            for name, value in known.items():  # only what the ending job knows
                if value is not None:
                    setattr(row, name, value)
            row.error_code = error_code
            row.error_message = error_message
            for i, out in enumerate(outputs):
                row.outputs.append(OutputRow(
                    index=i, kind=out.kind, name=out.name, sha256=out.sha256,
                    content_type=out.content_type, seed=out.seed, width=out.width,
                    height=out.height, prompt=out.prompt, strength=out.strength))

    def get(self, record_id: str) -> RecordRow:
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None:
                raise NotFound(f"record {record_id} not found", param="record_id")
            return row

    def get_by_job(self, job_id: str) -> RecordRow | None:
        with self.db.session() as s:
            return s.scalars(select(RecordRow).where(RecordRow.job_id == job_id)).first()

    def list(self, flt: RecordFilter) -> tuple[list[RecordRow], int]:
        query = select(RecordRow)
        if flt.endpoint:
            query = query.where(RecordRow.endpoint == flt.endpoint)
        if flt.status:
            query = query.where(RecordRow.status == flt.status)
        if flt.since:
            query = query.where(RecordRow.created_at >= self._utc(flt.since))
        if flt.until:
            query = query.where(RecordRow.created_at < self._utc(flt.until))
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(RecordRow.created_at.desc(), RecordRow.id)
                             .limit(flt.limit).offset(flt.offset)).all()
            return list(rows), total

    def _utc(self, when: datetime) -> datetime:
        """Filters compare in UTC; a time without a zone is taken as UTC. SQLite stores
        naive UTC, so it gets a naive value."""
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        return when.replace(tzinfo=None) if self.db.url.startswith("sqlite") else when

    def mark_unfinished_interrupted(self) -> int:
        """At startup: jobs left queued/running by a previous process can never finish."""
        with self.db.session() as s:
            rows = s.scalars(select(RecordRow).where(
                RecordRow.status.in_(("queued", "running")))).all()
            for row in rows:
                row.status = "interrupted"
                row.finished_at = _now()
                row.error_code = "interrupted"
                row.error_message = "the server stopped before this job finished"
            return len(rows)
