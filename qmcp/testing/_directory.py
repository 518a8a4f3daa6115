"""Replaying a directory of fixtures: the CI check that recorded runs still replay.

`fixture_files(directory)` lists the fixtures (for `pytest.mark.parametrize`, one test each);
`replay_fixtures(directory)` replays them all and names every one that no longer matches.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..agentframework.errors import NonDeterminismError, NotFoundError
from ._replay import ReplayResult, replay

__all__ = ["fixture_files", "replay_fixtures"]


def fixture_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The `*.json` fixtures in `directory`, sorted; an empty or missing directory is an error (a
    check over no fixture would pass without checking anything)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise NotFoundError(f"no directory {str(directory)!r} of fixtures")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise NotFoundError(
            f"no fixture (*.json) in {str(directory)!r}; export one with: qmcp executions export-fixture ID > FILE"
        )
    return files


def replay_fixtures(directory: str | os.PathLike[str]) -> list[ReplayResult]:
    """Replay every fixture of `directory`; raise `NonDeterminismError` naming each that differs
    (all of them, not only the first), else return their results."""
    results: list[ReplayResult] = []
    failures: list[str] = []
    for file in fixture_files(directory):
        try:
            results.append(replay(file))
        except NonDeterminismError as error:
            failures.append(f"{file.name}: {error}")
    if failures:
        raise NonDeterminismError(
            f"{len(failures)} of {len(failures) + len(results)} fixture(s) no longer replay: "
            + " | ".join(failures)
        )
    return results
