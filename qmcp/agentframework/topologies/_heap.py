"""Keeping the garbage collector off the heap that existed before a wide gather, and off what it keeps.

`gc.freeze` is process-global, so this is used with care: only while a run has many steps in flight
(`RunConfig.freeze_heap_above`, 500 by default; None turns it off), never when the process already
has frozen objects (a host's pre-fork `gc.freeze`: `gc.unfreeze` would thaw them too), and with
overlapping runs of the process sharing one freeze, released by the last of them.

A process qmcp owns for its life (`qmcp serve`) also freezes its start-up heap for good
(`freeze_start_up_heap`); runs then freeze on top of it, and give it back frozen when they end.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["freeze_start_up_heap", "older_heap_frozen"]

_REFREEZES = 2000
"""Collections (young or older) whose survivors are frozen before a full collection is let through
again: a 10,000-member ensemble makes about 1,450, a long run makes them several times a second.
(Counting the older generation's alone, 200 of them, came to the same allocations before the young
collections' survivors were frozen too; now there are about 10 a 10,000-member run.)"""

_lock = threading.Lock()
_holders = 0
_frozen_by_us = False
_refreezes = 0
_start_up = 0
"""Objects `freeze_start_up_heap` froze (0: none); a run's block may freeze on top of exactly these."""


def freeze_start_up_heap() -> bool:
    """Exempt the process's start-up heap (modules, classes, functions, caches: objects that live as
    long as the process) from garbage collection for good; whether it did. For a process qmcp owns
    (`qmcp serve`), never for a library's host: `gc.freeze` is process-wide.

    Under load a server's requests in flight survive the young collections, so full collections
    come every second or so, and each walked the ~250,000 objects of the imports: 150–300 ms with the
    event loop stopped, the whole p99 of `GET /v1/executions/{id}` (docs/benchmarks.md). Frozen, a full
    collection walks only what the server made since. Nothing is done a second time, when objects are
    frozen already (a host's freeze) or while a run's block holds the heap frozen."""
    global _start_up
    with _lock:
        if _start_up or _holders or gc.get_freeze_count() > 0:  # done, a run's block, or a host's freeze
            return False
        gc.collect()
        gc.freeze()
        _start_up = gc.get_freeze_count()
        return True


def _refreeze(phase: str, info: dict[str, Any]) -> None:
    global _refreezes
    if phase != "stop":
        return
    # The young collections' survivors (mostly steps in flight) are frozen too: left in the middle
    # generation, every collection of it walked them again (121 of them, 0.6–0.8 s of a
    # 10,000-member ensemble under load, against 0.01 s frozen).
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
    constant time, before the run and again after each collection (the young ones too: their
    survivors are the steps in flight, which the middle generation's collections walked again), and
    `gc.unfreeze` puts it all back at the end, so nothing leaks. Reference counting still frees
    the run's garbage at once; only cycles among frozen objects wait, for the end of the block or
    for the full collection let through every `_REFREEZES` collections (peak RSS unchanged).

    `gc.unfreeze` cannot tell whose objects it thaws: when the process has frozen objects already
    (`gc.get_freeze_count() > 0`, a host's pre-fork idiom), nothing is frozen here at all. A host
    that calls `gc.freeze` while such a block runs gets its objects thawed at the block's end.
    Objects `freeze_start_up_heap` froze are ours: the block freezes on top of them and, at its end,
    collects once and freezes what is alive then (the start-up heap and what the process holds).
    """
    global _holders, _frozen_by_us, _refreezes, _start_up
    with _lock:
        if _holders == 0:
            _frozen_by_us = gc.get_freeze_count() <= _start_up
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
                if _start_up:  # one full collection (what the run left), then the start-up heap again
                    gc.collect()
                    gc.freeze()
                    _start_up = gc.get_freeze_count()
