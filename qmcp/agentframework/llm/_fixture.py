"""Fixture files: an exported run's recorded replies, read by step key (free of pydantic-ai).

`qmcp.testing` writes them (`export_fixture`); the `recorded:` model (`_recorded.py`) and replay
tests read them. The document is versioned: a reader refuses any other `format`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, NotFoundError

__all__ = ["FIXTURE_FORMAT", "RecordedReply", "read_fixture", "recorded_replies"]

FIXTURE_FORMAT = "qmcp-fixture/1"
"""The `format` of a fixture document; a reader refuses any other (a newer qmcp's, a foreign file)."""


@dataclass(frozen=True)
class RecordedReply:
    """What one completed step's model answered, with the tokens it was recorded with."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


_cache: dict[tuple[str, int, int], dict[str, RecordedReply]] = {}
_lock = threading.Lock()


def recorded_replies(path: str | os.PathLike[str]) -> dict[str, RecordedReply]:
    """The replies of a fixture file by step key; read once per version of the file."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        raise NotFoundError(
            f"recorded fixture {str(path)!r} not found; export one with: qmcp executions export-fixture ID > FILE"
        ) from None
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    replies = _replies(read_fixture(file))
    with _lock:
        _cache[key] = replies
    return replies


def read_fixture(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A fixture document, checked to be one (its content is never quoted in an error)."""
    name = str(path)
    try:
        document = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(
            f"recorded fixture {name!r} not found; export one with: qmcp executions export-fixture ID > FILE"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InvalidConfigError(
            f"{name!r} is not a qmcp fixture ({type(error).__name__}); export one with: "
            "qmcp executions export-fixture ID > FILE"
        ) from None
    found = document.get("format") if isinstance(document, Mapping) else None
    if found != FIXTURE_FORMAT:
        detail = f"its format is {found!r}" if isinstance(found, str) else "it has no format field"
        raise InvalidConfigError(
            f"{name!r} is not a {FIXTURE_FORMAT} fixture ({detail}); export it again with this qmcp: "
            "qmcp executions export-fixture ID > FILE"
        )
    if not isinstance(document.get("steps"), list):
        raise InvalidConfigError(f"{name!r}: a fixture's steps must be a list")
    return dict(document)


def _replies(document: Mapping[str, Any]) -> dict[str, RecordedReply]:
    replies: dict[str, RecordedReply] = {}
    for step in document["steps"]:
        if not isinstance(step, Mapping) or not isinstance(step.get("key"), str):
            raise InvalidConfigError("a fixture step must be an object with a string key")
        if step.get("status", "completed") != "completed" or step.get("response") is None:
            continue  # a failed step recorded no reply: a call for it is unrecorded
        replies[step["key"]] = RecordedReply(
            str(step["response"]), int(step.get("input_tokens") or 0), int(step.get("output_tokens") or 0)
        )
    return replies
