"""Keeping the garbage collector off the heap that existed before a wide gather, and off what it keeps.

`gc.freeze` is process-global, so this is used with care: only while a run has many steps in flight
(`RunConfig.freeze_heap_above`, 500 by default; None turns it off), never when the process already
has frozen objects (a host's pre-fork `gc.freeze`: `gc.unfreeze` would thaw them too), and with
overlapping runs of the process sharing one freeze, released by the last of them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["older_heap_frozen"]

_REFREEZES = 200
"""Older-generation collections whose survivors are frozen before a full collection is let through
again: a 10,000-member ensemble makes about 100, a long run makes them every few seconds."""

_lock = threading.Lock()
_holders = 0
_frozen_by_us = False
_refreezes = 0


def _refreeze(phase: str, info: dict[str, Any]) -> None:
    global _refreezes
    if phase != "stop" or info["generation"] == 0:
        return
    if _refreezes < _REFREEZES:
        _refreezes += 1
        gc.freeze()
    elif info["generation"] == 2:  # the full collection let through has run: freeze again
        _refreezes = 0
        gc.freeze()
    elif _refreezes == _REFREEZES:  # give the next full collection the whole heap
        _refreezes += 1
        gc.unfreeze()


@contextlib.contextmanager
def older_heap_frozen() -> Iterator[bool]:
    """Exempt every object that exists now, and every object that survives a collection, from
    garbage collection until the block ends; yields whether it did (not when the host froze objects).

    Steps waiting on a model survive the young collections, so a large concurrent run promotes
    objects steadily and triggers full collections; each one walks every module, class and
    function imported before the run, and every step still in flight (measured: 0.5–0.7 s of a
    2.4 s 10,000-member ensemble, in ten full collections). `gc.freeze` moves that heap aside in
    constant time, before the run and again after each older-generation collection, and
    `gc.unfreeze` puts it all back at the end, so nothing leaks. Reference counting still frees
    the run's garbage at once; only cycles among frozen objects wait, for the end of the block or
    for the full collection let through every `_REFREEZES` collections (peak RSS unchanged).

    `gc.unfreeze` cannot tell whose objects it thaws: when the process has frozen objects already
    (`gc.get_freeze_count() > 0`, a host's pre-fork idiom), nothing is frozen here at all. A host
    that calls `gc.freeze` while such a block runs gets its objects thawed at the block's end.
    """
    global _holders, _frozen_by_us, _refreezes
    with _lock:
        if _holders == 0:
            _frozen_by_us = gc.get_freeze_count() == 0
            if _frozen_by_us:
                _refreezes = 0
                gc.freeze()
                gc.callbacks.append(_refreeze)
        _holders += 1
        active = _frozen_by_us
    try:
        yield active
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _frozen_by_us:
                gc.callbacks.remove(_refreeze)
                gc.unfreeze()
                _frozen_by_us = False
