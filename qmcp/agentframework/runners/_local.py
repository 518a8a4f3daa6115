"""LocalRunner: in-process, one step at a time, in a deterministic order."""

from __future__ import annotations

from ._base import BaseRunner, runner

__all__ = ["LocalRunner"]


@runner
class LocalRunner(BaseRunner):
    """Runs every step in order in this process; the easiest runner to debug."""

    runner_type = "local"
