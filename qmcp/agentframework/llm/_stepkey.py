"""The step a model call belongs to, for models that answer by step (`recorded:` fixtures).

A model sees messages, not the run. `StepContext` names the step's full key around each model
call with `calling_step`; a model that answers from a recording reads it with `current_step_key`.
A context variable, so concurrent steps of one run (each in its own task) never see each other's.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["calling_step", "current_step_key"]

_STEP_KEY: ContextVar[str | None] = ContextVar("qmcp_step_key", default=None)


def current_step_key() -> str | None:
    """The full key of the step whose model call is being made here, None outside a step."""
    return _STEP_KEY.get()


class calling_step:  # a context manager, named as the function it was
    """Name `key` as the step of the model calls made inside (its retries and re-asks included).

    A class, not a generator: entered around every model call, it costs a third of
    `contextlib.contextmanager`'s."""

    __slots__ = ("_key", "_token")

    def __init__(self, key: str) -> None:
        self._key = key

    def __enter__(self) -> None:
        self._token = _STEP_KEY.set(self._key)

    def __exit__(self, *_: object) -> None:
        _STEP_KEY.reset(self._token)
