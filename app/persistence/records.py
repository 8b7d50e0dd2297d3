"""Record repository: the only place that queries the ``records`` tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, String, cast, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.errors import InvalidInput, NotFound
from app.persistence.database import Database
from app.persistence.orm import OutputRow, RecordRow

# The owner of the records made without an API key (loopback callers given
# BILDWERK_LOOPBACK_SCOPES): they see these, and no key's records.
KEYLESS = "keyless"
# Why a job whose lease ran out ended (app/jobs/leases.py).
REAPED_MESSAGE = ("the process holding this job stopped before it finished (its lease ran "
                  "out); submit it again")


def owned_by(row: RecordRow, api_key_id: str) -> bool:
    """Whether ``row`` is ``api_key_id``'s (a key id, or :data:`KEYLESS`)."""
    return row.api_key_id == (None if api_key_id == KEYLESS else api_key_id)


def _owner_clause(api_key_id: str):
    if api_key_id == KEYLESS:
        return RecordRow.api_key_id.is_(None)
    return RecordRow.api_key_id == api_key_id


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
    recorded: bool = False  # already on the record (add_output): finish skips it


@dataclass
class RecordFilter:
    endpoint: str | None = None
    endpoints: tuple[str, ...] = ()  # any of these (the dataset export's inpaint,inpainting)
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    api_key_id: str | None = None  # only this key's records (None: everyone's)
    client_host: str | None = None  # client.host as recorded
    min_rating: int | None = None  # feedback rating at least this (unrated: left out)
    flags: tuple[str, ...] = ()  # feedback carries every one of these flags
    exclude_flags: tuple[str, ...] = ()  # feedback carries none of these
    has_feedback: bool | None = None
    oldest_first: bool = False  # default: newest first
    limit: int | None = 50  # None: no limit
    offset: int = 0


class RecordRepository:
    def __init__(self, db: Database, *, instance: str | None = None,
                 lease_s: float = 30.0) -> None:
        self.db = db
        self.instance = instance  # this process, as lease owner (app/jobs/leases.py)
        self.lease_s = lease_s

    def create(self, new: NewRecord) -> None:
        with self.db.session() as s:
            s.add(RecordRow(
                id=new.id, job_id=new.job_id, endpoint=new.endpoint, status="queued",
                provider=new.provider, model=new.model, loras=new.loras, vae=new.vae,
                scheduler=new.scheduler, prompt=new.prompt, negative_prompt=new.negative_prompt,
                prompt_translated=new.prompt_translated, prompt_expanded=new.prompt_expanded,
                params=new.params, client=new.client, input_image_sha256=new.input_image_sha256,
                mask_sha256=new.mask_sha256, created_at=_now(),
                api_key_id=(new.client or {}).get("key_id"), lease_owner=self.instance,
                lease_expires_at=_now() + timedelta(seconds=self.lease_s)))

    def add_output(self, record_id: str, out: OutputImage) -> OutputImage:
        """Record one output while the job still runs (a sequence's frame as it is stored),
        after those already recorded. Returns it marked ``recorded``, so that passing it to
        :meth:`finish` again does not list it twice."""
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None:
                raise NotFound(f"record {record_id} not found", param="record_id")
            row.outputs.append(_output_row(len(row.outputs), out))
        return replace(out, recorded=True)

    def mark_running(self, record_id: str) -> None:
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is not None:
                row.status = "running"
                row.started_at = _now()
                row.worker = self.instance

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
            new = [out for out in outputs if not out.recorded]
            for i, out in enumerate(new, start=len(row.outputs)):
                row.outputs.append(_output_row(i, out))

    def get(self, record_id: str, *, api_key_id: str | None = None) -> RecordRow:
        """The record; with ``api_key_id``, only if that key made it (else the same 404 as
        an unknown id, so another key's records do not even show that they exist)."""
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None or (api_key_id is not None and not owned_by(row, api_key_id)):
                raise NotFound(f"record {record_id} not found", param="record_id")
            return row

    def blob_belongs_to(self, sha256: str, api_key_id: str) -> bool:
        """Whether one of the key's records names the blob: its input, mask, applied mask
        or one of its outputs."""
        named = or_(RecordRow.input_image_sha256 == sha256, RecordRow.mask_sha256 == sha256,
                    RecordRow.mask_applied_sha256 == sha256)
        with self.db.session() as s:
            if s.scalars(select(RecordRow.id).where(_owner_clause(api_key_id), named)
                         .limit(1)).first() is not None:
                return True
            return s.scalars(
                select(OutputRow.id).join(RecordRow, OutputRow.record_id == RecordRow.id)
                .where(OutputRow.sha256 == sha256, _owner_clause(api_key_id))
                .limit(1)).first() is not None

    def set_feedback(self, record_id: str, *, rating: int | None, flags: list[str],
                     comment: str | None, key_id: str | None,
                     api_key_id: str | None = None) -> RecordRow:
        """Store feedback on a record, replacing any earlier feedback as a whole; with
        ``api_key_id``, only on that key's records (else the 404 of :meth:`get`)."""
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None or (api_key_id is not None and not owned_by(row, api_key_id)):
                raise NotFound(f"record {record_id} not found", param="record_id")
            row.feedback_rating = rating
            row.feedback_flags = list(flags)
            row.feedback_comment = comment
            row.feedback_at = _now()
            row.feedback_key_id = key_id
            return row

    def readable(self) -> bool:
        """Whether the records table answers a query (GET /ready): cheap, one row at most."""
        try:
            with self.db.session() as s:
                s.execute(select(RecordRow.id).limit(1)).first()
            return True
        except SQLAlchemyError:
            return False

    def get_by_job(self, job_id: str) -> RecordRow | None:
        with self.db.session() as s:
            return s.scalars(select(RecordRow).where(RecordRow.job_id == job_id)).first()

    def list(self, flt: RecordFilter) -> tuple[list[RecordRow], int]:
        query = self._query(flt)
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(self._ordered(query, flt).limit(flt.limit)
                             .offset(flt.offset)).all()
            return list(rows), total

    def iterate(self, flt: RecordFilter, batch: int = 200) -> Iterator[RecordRow]:
        """Every matching record (with its outputs), fetched ``batch`` at a time; honours
        ``flt.limit`` (None: all) and ``flt.offset``. Oldest first suits a long export:
        records made meanwhile only add to the end."""
        query, done = self._ordered(self._query(flt), flt), 0
        while flt.limit is None or done < flt.limit:
            size = batch if flt.limit is None else min(batch, flt.limit - done)
            with self.db.session() as s:
                rows = s.scalars(query.limit(size).offset(flt.offset + done)).all()
            yield from rows
            done += len(rows)
            if len(rows) < size:
                return

    def _query(self, flt: RecordFilter) -> Select:
        query = select(RecordRow)
        if flt.endpoint:
            query = query.where(RecordRow.endpoint == flt.endpoint)
        if flt.endpoints:
            query = query.where(RecordRow.endpoint.in_(flt.endpoints))
        if flt.status:
            query = query.where(RecordRow.status == flt.status)
        if flt.since:
            query = query.where(RecordRow.created_at >= self._utc(flt.since))
        if flt.until:
            query = query.where(RecordRow.created_at < self._utc(flt.until))
        if flt.api_key_id is not None:
            query = query.where(_owner_clause(flt.api_key_id))
        if flt.client_host is not None:
            query = query.where(RecordRow.client["host"].as_string() == flt.client_host)
        if flt.min_rating is not None:
            query = query.where(RecordRow.feedback_rating >= flt.min_rating)
        for flag in flt.flags:
            query = query.where(self._has_flag(flag))
        for flag in flt.exclude_flags:
            query = query.where(~self._has_flag(flag))
        if flt.has_feedback is not None:
            query = query.where(RecordRow.feedback_at.is_not(None) if flt.has_feedback
                                else RecordRow.feedback_at.is_(None))
        return query

    @staticmethod
    def _ordered(query: Select, flt: RecordFilter) -> Select:
        if flt.oldest_first:
            return query.order_by(RecordRow.created_at, RecordRow.id)
        return query.order_by(RecordRow.created_at.desc(), RecordRow.id)

    @staticmethod
    def _has_flag(flag: str):
        """Whether the feedback flags (a JSON list) hold ``flag``. Flags are validated to
        ``[a-z0-9_]``, so in the JSON text an element is exactly the quoted name and a
        substring test (with ``_`` escaped for LIKE) is exact, on SQLite and PostgreSQL
        alike. No feedback compares as an empty list, so it holds no flag."""
        text = func.coalesce(cast(RecordRow.feedback_flags, String), "[]")
        return text.contains(f'"{flag}"', autoescape=True)

    def _utc(self, when: datetime) -> datetime:
        """Filters compare in UTC; a time without a zone is taken as UTC. SQLite stores
        naive UTC, so it gets a naive value."""
        try:
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 lies before year 1 in UTC
            raise InvalidInput(f"{when.isoformat()} is out of range", param="since") from None
        return when.replace(tzinfo=None) if self.db.url.startswith("sqlite") else when

    def renew_leases(self, record_ids: list[str]) -> int:
        """Extend the leases of these queued or running records by ``lease_s`` (their holder
        is alive)."""
        if not record_ids:
            return 0
        until = _now() + timedelta(seconds=self.lease_s)
        with self.db.session() as s:
            result = s.execute(
                update(RecordRow)
                .where(RecordRow.id.in_(record_ids),
                       RecordRow.status.in_(("queued", "running")))
                .values(lease_expires_at=until, lease_owner=self.instance)
                .execution_options(synchronize_session=False))
            return result.rowcount or 0

    def reap_expired(self) -> list[RecordRow]:
        """Record every queued or running job whose lease ran out ``interrupted`` (its
        holder died); returns their rows. Rows another process is
        updating right now are skipped (PostgreSQL), not waited for."""
        now = _now()
        expired = or_(RecordRow.lease_expires_at.is_(None),
                      RecordRow.lease_expires_at < self._utc(now))
        with self.db.session() as s:
            query = select(RecordRow).where(
                RecordRow.status.in_(("queued", "running")), expired)
            if not self.db.url.startswith("sqlite"):
                query = query.with_for_update(skip_locked=True)
            rows = s.scalars(query).all()
            for row in rows:
                row.status = "interrupted"
                row.finished_at = now
                row.error_code = "interrupted"
                row.error_message = REAPED_MESSAGE
            return list(rows)

    def finish_if_unfinished(self, record_id: str, **fields) -> bool:
        """:meth:`finish`, unless the record already ended (its worker finished it)."""
        with self.db.session() as s:
            row = s.get(RecordRow, record_id)
            if row is None or row.status not in ("queued", "running"):
                return False
        self.finish(record_id, **fields)
        return True

    def mark_unfinished_interrupted(self) -> int:
        """At the start of a process that is alone on its database (no
        BILDWERK_CLUSTER, no Ray): every lease is dead, so jobs left queued/running by a
        previous process can never finish."""
        with self.db.session() as s:
            rows = s.scalars(select(RecordRow).where(
                RecordRow.status.in_(("queued", "running")))).all()
            for row in rows:
                row.status = "interrupted"
                row.finished_at = _now()
                row.error_code = "interrupted"
                row.error_message = "the server stopped before this job finished"
            return len(rows)


def _output_row(index: int, out: OutputImage) -> OutputRow:
    return OutputRow(index=index, kind=out.kind, name=out.name, sha256=out.sha256,
                     content_type=out.content_type, seed=out.seed, width=out.width,
                     height=out.height, prompt=out.prompt, strength=out.strength)
