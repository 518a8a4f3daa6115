"""Whether objects are frozen, asked of the collector itself: the permanent generation holds what
`gc.freeze` moved aside, and `gc.get_objects()` lists only the three collected generations.

Counting (`gc.get_freeze_count()` before and after) is not enough: a frozen object freed by
reference counting meanwhile, by the test runner or another thread, lowers the count."""

from __future__ import annotations

import gc
from collections.abc import Iterable


def all_frozen(objects: Iterable[object]) -> bool:
    collected = {id(o) for o in gc.get_objects()}
    return not any(id(o) in collected for o in objects)
