"""Leases and heartbeats: how a job whose process died ends ``interrupted``.

Every queued or running record carries a lease (``lease_owner``, ``lease_expires_at``),
set when it is accepted. The process holding the job (the ingress that queued it, and the
Ray worker running it) renews the leases of all its jobs every third of
``BILDWERK_LEASE_S``. Any process sharing the database reaps: a queued or running record
whose lease ran out is recorded ``interrupted``, and a terminal ``interrupted`` event goes to
the job's followers on the bus, so no client waits on a job nobody runs.

A process alone on its database (no BILDWERK_CLUSTER, no Ray) knows every lease it did not
give is dead, and at its start records them all at once
(:meth:`~app.persistence.records.RecordRepository.mark_unfinished_interrupted`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.persistence.records import RecordRepository
from app.services.results import status_from_record

log = logging.getLogger("bildwerk.leases")


class LeaseKeeper:
    """Renews the leases of ``held()`` records; with ``reap``, also records the expired
    leases of others ``interrupted`` (and tells their followers through ``bus``)."""

    def __init__(self, records: RecordRepository, held: Callable[[], list[str]], *,
                 lease_s: float, reap: bool, bus=None) -> None:
        self.records = records
        self.held = held
        self.lease_s = lease_s
        self.reap = reap
        self.bus = bus
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def beat(self) -> None:
        """One heartbeat: renew, then reap (both also run by the thread)."""
        try:
            self.records.renew_leases(self.held())
        except Exception:
            log.exception("could not renew leases")
        if self.reap:
            self.reap_now()

    def reap_now(self) -> list:
        try:
            reaped = self.records.reap_expired()
        except Exception:
            log.exception("could not reap expired leases")
            return []
        for row in reaped:
            log.warning("job %s: its lease ran out; recorded interrupted", row.job_id)
            if self.bus is not None:
                self.bus.publish(row.job_id, "interrupted", status_from_record(row))
        return reaped

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.beat()
