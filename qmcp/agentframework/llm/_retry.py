"""Retrying a model call on transient errors: exponential backoff with full jitter.

Kept apart from `_call` (and pydantic-ai): the step layer wraps its calls in it at import time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import ModelError, TransientModelError

__all__ = ["retry_delay", "retry_transient"]

T = TypeVar("T")


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    on_retry: Callable[[int, TransientModelError], None] | None = None,
) -> tuple[T, int]:
    """Run `call`, retrying transient model errors with exponential backoff and full jitter.

    Honours a provider's `retry_after` when it is longer than the backoff. Returns the result
    and the number of attempts made; the last error propagates when retries run out, and a model
    error that is not transient at once, each with the attempts made (`attempts`).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except TransientModelError as error:
            delay = retry_delay(
                error, attempt, max_retries=max_retries, base_delay=base_delay, max_delay=max_delay
            )
            if on_retry is not None:
                on_retry(attempt, error)
            await asyncio.sleep(delay)
        except ModelError as error:  # a permanent failure after retries: every attempt was paid
            error.attempts = attempt
            raise


def retry_delay(
    error: TransientModelError, attempt: int, *, max_retries: int, base_delay: float, max_delay: float
) -> float:
    """How long to wait before retrying `error`, which attempt number `attempt` raised; raises it
    (its `attempts` set) when the retries have run out.

    The policy of `retry_transient`, apart from its loop: the plain step (`StepContext`) retries
    in its own frame with it, so that both paths wait and give up alike.
    """
    error.attempts = attempt
    if attempt > max_retries:
        raise error
    delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
    return max(delay, min(error.retry_after or 0.0, max_delay))
