"""The per-caller limit (``BILDWERK_MAX_QUEUED_PER_KEY``): how much work one caller (API
key, else client host) may have in the server at once. Counted are its jobs queued or
running on every queue, and its prompt expansions in progress (``POST /prompt-expand``
runs in the request, not as a job, but costs an LLM call or CPU all the same)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from app.errors import TooManyJobs
from app.jobs.queue import JobQueue


class OwnerLimit:
    def __init__(self, limit: int, retry_after_s: int, queues: Sequence[JobQueue]) -> None:
        self.limit = limit  # 0: no limit
        self.retry_after_s = retry_after_s
        self.queues = list(dict.fromkeys(queues))  # one queue may be named twice
        self.lock = threading.Lock()  # count-then-take is one step per caller
        self._in_request: Counter[str] = Counter()

    def live(self, owner: str) -> int:
        return sum(q.live(owner) for q in self.queues) + self._in_request[owner]

    def check(self, owner: str | None) -> None:
        """429 ``too_many_jobs`` when ``owner`` already has as much work as allowed."""
        if not self.limit or owner is None:
            return
        live = self.live(owner)
        if live >= self.limit:
            raise TooManyJobs(
                f"you already have {live} jobs or prompt expansions in progress (at most "
                f"{self.limit}, BILDWERK_MAX_QUEUED_PER_KEY); wait for one to finish",
                retry_after_s=self.retry_after_s)

    @contextmanager
    def holding(self, owner: str | None) -> Iterator[None]:
        """Count work done inside the request (not queued) against ``owner`` while it
        runs; 429 ``too_many_jobs`` up front when the caller is at the limit."""
        if owner is None:
            yield
            return
        with self.lock:
            self.check(owner)
            self._in_request[owner] += 1
        try:
            yield
        finally:
            with self.lock:
                self._in_request[owner] -= 1
                if self._in_request[owner] <= 0:
                    del self._in_request[owner]
