"""A lease clock tests advance by hand (`db.executions.clock = FakeClock()`), so no test waits in real
time for a lease to run out."""

from __future__ import annotations

from datetime import datetime, timedelta

from qmcp.agentframework.models import utcnow


class FakeClock:
    """`qmcp.agentframework.store.Clock`, standing still until `advance`d."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
