"""Passwords in URLs never reach a terminal or a log: `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`.

Database URLs carry passwords (`--db`, `QMCP_DATABASE_URL`), and messages, hints and log lines
mention them. Every place that prints one masks it with `mask_url`; the CLI's error printer and
the log processor also pass whole texts through `redact`, for URLs quoted inside other messages.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "has_password", "mask_url", "redact", "redact_log_values"]

MASK = "***"
"""What a password is replaced with, as SQLAlchemy's `render_as_string(hide_password=True)` writes it."""

# scheme://user:password@host — the password runs to the authority's last '@', so a password
# holding a raw '@' (`u:p@ss@host`) is masked whole, as URL parsers read it.
_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:'\"]*):(?P<password>[^\s/'\"]*)@(?=[^\s/@'\"]*(?:[/\s'\"?#]|$))"
)


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    if "://" not in text:  # the common case, checked without the regex
        return text
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@" if m["password"] != MASK else m[0], text)


def mask_url(url: str) -> str:
    """A URL as it may be shown: its password, if any, replaced by `***`."""
    return redact(url)


def has_password(url: str) -> bool:
    """Whether `url` carries a password (that showing it would disclose)."""
    return any(m["password"] not in ("", MASK) for m in _CREDENTIALS.finditer(url))


def redact_log_values(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: string values of a log line with their URLs' passwords masked."""
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = redact(value)
    return event
