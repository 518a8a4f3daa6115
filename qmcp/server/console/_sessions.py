"""The console's sign-ins: random session ids kept in this server process, and the limit on failed logins.

A session id is 32 random bytes, unrelated to the token, that expires (QMCP_CONSOLE_SESSION_HOURS) and
that `/logout` ends. The sessions live in memory only: restarting the server signs every browser out.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CONSOLE_COOKIE", "ConsoleSessions", "LoginLimiter"]

CONSOLE_COOKIE = "qmcp_console"
_WINDOW = 60.0


class ConsoleSessions:
    """The signed-in browsers of this process: session id → when it expires (a monotonic time)."""

    def __init__(self, lifetime_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime_seconds
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def start(self) -> str:
        now = self._clock()
        self._expiry = {sid: at for sid, at in self._expiry.items() if at > now}  # forget the expired
        sid = secrets.token_urlsafe(32)
        self._expiry[sid] = now + self.lifetime
        return sid

    def valid(self, sid: str | None) -> bool:
        """Whether `sid` is a live session (an expired one is forgotten here)."""
        if not sid:
            return False
        expiry = self._expiry.get(sid)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._expiry[sid]
            return False
        return True

    def end(self, sid: str | None) -> None:
        if sid:
            self._expiry.pop(sid, None)


class LoginLimiter:
    """At most `per_minute` failed sign-ins per client address in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.per_minute:
            return None
        return max(1, math.ceil(failures[0] + _WINDOW - self._clock()))

    def failed(self, address: str) -> None:
        if len(self._failures) > 10_000:  # many addresses: keep only those that failed this minute
            for stale in [a for a in self._failures if not self._recent(a)]:
                self._failures.pop(stale, None)
        self._failures.setdefault(address, deque(maxlen=self.per_minute)).append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is not None:
            while failures and failures[0] <= self._clock() - _WINDOW:
                failures.popleft()
        return failures
