"""Rate limits per provider and model, shared by every run, runner and agent of the process.

A provider limits an account's requests and tokens per minute; a 50-member ensemble, or ten runs
at once, would otherwise fire into that limit together and spend their retries on 429s. Limits are
off by default and come from, first to last: `RateLimits.configure` (what `RunConfig.rate_limits`
calls when a run starts), the `QMCP_RATE_LIMITS` variable, and the `requests_per_minute` /
`tokens_per_minute` of the model's `ModelConfig` in the `Models` registry.

`QMCP_RATE_LIMITS` is JSON, `{"openai:gpt-4.1": {"rpm": 500, "tpm": 200000}}`, or the short form
`openai:gpt-4.1=500/200000,anthropic:claude-sonnet-4-20250514=50` (requests/tokens per minute; a
`-` or a missing part leaves that one unlimited). Keys are model strings as agents name them.

Callers wait for their turn rather than fail. Each limiter spaces calls out evenly (a generic cell
rate algorithm: one reservation per call, no polling) with a burst of at most one second's share.
A call reserves its estimated tokens; when it returns, what it used settles the difference. A call
that used more than it reserved pushes back every caller still waiting, not only later ones: 80
calls reserved at once on an estimate of half their use would otherwise go out at twice the limit,
and the model would then stand idle while the overrun is paid back (`bench`'s `rate_limit`).
A 429 that says `retry-after` pauses the model's limiter for every caller, not only the one that
got it — also for a model with no limit configured, which gets a limiter that only pauses.

The limiters belong to a `RateLimits` registry: `rate_limits()` returns the process's, made on
first use; `reset()` forgets every limiter and re-reads the variable. Each process has its own: a
Metaflow task (a process per step) limits only its own calls (see docs/spend.md).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import InvalidConfigError

__all__ = [
    "RATE_LIMITS_VARIABLE",
    "RateLimit",
    "RateLimiter",
    "RateLimits",
    "parse_rate_limits",
    "rate_limits",
]

RATE_LIMITS_VARIABLE = "QMCP_RATE_LIMITS"
_BURST_SECONDS = 1.0


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens per minute; None leaves that one unlimited."""

    rpm: float | None = None
    tpm: float | None = None


class RateLimiter:
    """The calls of one provider and model: at most `rpm` requests and `tpm` tokens a minute.

    Thread-safe: runs in several threads (each with its event loop) share it.
    """

    def __init__(self, limit: RateLimit) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self._request_at = 0.0  # the theoretical time of the next request (GCRA), monotonic
        self._tokens_at = 0.0
        self.paused_until = 0.0
        self._overrun = 0.0  # seconds of tokens calls used beyond their reservations, ever (see `settle`)
        self.requests = 0
        """Calls admitted so far (for benchmarks and tests)."""

    def set_limit(self, limit: RateLimit) -> None:
        with self._lock:
            self.limit = limit

    def _reserve(self, tokens: int) -> float:
        """Reserve the next free moment for a call of `tokens`; the seconds to wait for it."""
        return self._turn(tokens)[0]

    def _turn(self, tokens: int) -> tuple[float, float]:
        """`_reserve`, and the overrun its turn already allows for (`_owed` measures the rest from it)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self.paused_until)
            rpm, tpm = self.limit.rpm, self.limit.tpm
            if rpm:
                interval = 60.0 / rpm
                tolerance = max(interval, rpm / 60.0 * _BURST_SECONDS * interval) - interval
                start = max(start, self._request_at - tolerance)
                self._request_at = max(self._request_at, start) + interval
            if tpm and tokens > 0:
                per_token = 60.0 / tpm
                tolerance = max(0.0, tpm / 60.0 * _BURST_SECONDS * per_token - tokens * per_token)
                start = max(start, self._tokens_at - tolerance)
                self._tokens_at = max(self._tokens_at, start) + tokens * per_token
            return start - now, self._overrun

    def _owed(self, overrun: float) -> tuple[float, float]:
        """The seconds a waiting caller's turn moved back since the overrun was `overrun`, and the overrun now."""
        with self._lock:
            return self._overrun - overrun, self._overrun

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a call of about `tokens` tokens may go out.

        A pause (a 429) that began while the caller waited sends it back for a new turn after
        the pause: reserved turns are not all released at once when the pause ends.
        """
        while True:
            wait, overrun = self._turn(tokens)
            while wait > 0:  # calls ahead of this one that used more than they reserved move it back
                await asyncio.sleep(wait)
                wait, overrun = self._owed(overrun)
            if time.monotonic() >= self.paused_until:
                with self._lock:
                    self.requests += 1
                return

    def settle(self, estimated: int, used: int) -> None:
        """Correct a call's reserved tokens by what it used: less frees the difference for later calls;
        more pushes back later calls and every caller still waiting for its turn (see `acquire`)."""
        if self.limit.tpm and used != estimated:
            with self._lock:
                seconds = (used - estimated) * 60.0 / self.limit.tpm
                self._tokens_at += seconds
                self._overrun += max(seconds, 0.0)

    def back_off(self, seconds: float) -> None:
        """No call goes out for `seconds` (a provider's retry-after), and later ones queue after it."""
        with self._lock:
            until = time.monotonic() + seconds
            if until > self.paused_until:
                self.paused_until = until
                self._request_at = max(self._request_at, until)
                self._tokens_at = max(self._tokens_at, until)


class RateLimits:
    """The process's rate limiters by model string; see the module's docstring for the sources."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._environ = environ
        self._limiters: dict[str, RateLimiter | None] = {}
        self._configured: dict[str, RateLimit] = {}
        self._from_environment = parse_rate_limits((environ or os.environ).get(RATE_LIMITS_VARIABLE, ""))

    def limiter(
        self, model: str, config_limit: Callable[[], RateLimit | None] | None = None
    ) -> RateLimiter | None:
        """The limiter of `model`, or None when it has none; `config_limit` gives its ModelConfig's
        limit, asked the first time the model is seen.

        Called before every model call: one dictionary look-up once the model has been seen.
        """
        try:
            return self._limiters[model]
        except KeyError:
            pass
        fallback = config_limit() if config_limit is not None else None
        with self._lock:
            if model not in self._limiters:
                limit = self._configured.get(model) or self._from_environment.get(model) or fallback
                self._limiters[model] = RateLimiter(limit) if limit is not None else None
            return self._limiters[model]

    def configure(self, model: str, limit: RateLimit | None) -> None:
        """Set `model`'s limit for the whole process (None: back to the variable's or the ModelConfig's)."""
        with self._lock:
            if limit is None:
                self._configured.pop(model, None)
                self._limiters.pop(model, None)
                return
            self._configured[model] = limit
            current = self._limiters.get(model)
            if current is None:
                self._limiters[model] = RateLimiter(limit)
            else:
                current.set_limit(limit)

    def back_off(self, model: str, seconds: float) -> None:
        """A 429 with retry-after for `model`: every caller of the process waits `seconds`."""
        if seconds <= 0:
            return
        with self._lock:
            limiter = self._limiters.get(model)
            if limiter is None:
                limiter = self._limiters[model] = RateLimiter(
                    self._configured.get(model) or self._from_environment.get(model) or RateLimit()
                )
        limiter.back_off(seconds)

    def reset(self) -> None:
        """Forget every limiter, its pauses and the configured limits; read `QMCP_RATE_LIMITS` again."""
        with self._lock:
            self._limiters.clear()
            self._configured.clear()
            self._from_environment = parse_rate_limits(
                (self._environ or os.environ).get(RATE_LIMITS_VARIABLE, "")
            )


_registry: RateLimits | None = None
_registry_lock = threading.Lock()


def rate_limits() -> RateLimits:
    """The process's rate limit registry, made on first use (`rate_limits().reset()` clears it)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = RateLimits()
    return _registry


def parse_rate_limits(text: str) -> dict[str, RateLimit]:
    """`QMCP_RATE_LIMITS`: JSON `{"model": {"rpm": N, "tpm": N}}` or `model=RPM/TPM,...`."""
    text = text.strip()
    if not text:
        return {}
    hint = (
        f'{RATE_LIMITS_VARIABLE} must be JSON like {{"openai:gpt-4.1": {{"rpm": 500, "tpm": 200000}}}} '
        "or model=RPM/TPM,... like openai:gpt-4.1=500/200000"
    )
    limits: dict[str, RateLimit] = {}
    try:
        if text.startswith("{"):
            for model, values in json.loads(text).items():
                unknown = set(values) - {"rpm", "tpm"}
                if unknown:
                    raise ValueError(f"unknown keys {sorted(unknown)}")
                limits[model] = RateLimit(_rate(values.get("rpm")), _rate(values.get("tpm")))
        else:
            for item in filter(None, (part.strip() for part in text.split(","))):
                model, _, rates = item.rpartition("=")
                rpm, _, tpm = rates.partition("/")
                if not model:
                    raise ValueError(f"{item!r} names no model")
                limits[model.strip()] = RateLimit(_rate(rpm), _rate(tpm))
    except (ValueError, TypeError, AttributeError) as error:
        raise InvalidConfigError(f"{hint} ({error})") from None
    return limits


def _rate(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "-")):
        return None
    rate = float(value)  # type: ignore[arg-type]  # any value: what float() refuses is the caller's one-line error
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"a rate must be a positive number, not {value!r}")
    return rate
