"""Passwords in URLs never reach a terminal or a log: `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`.

Database URLs carry passwords (`--db`, `QMCP_DATABASE_URL`), and messages, hints and log lines
mention them. Every place that prints one masks it with `mask_url`; the CLI's error printer and
the log processor also pass whole texts through `redact`, for URLs quoted inside other messages.

API keys never reach a log, a span or a step's error either: a provider may quote the key it was
sent in its error message. `redact_secrets` masks the values of the process's key variables
(`*_API_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`) and anything shaped like a provider key.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["MASK", "has_password", "mask_url", "redact", "redact_log_values", "redact_secrets"]

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


_SECRET_VARIABLE = re.compile(r"(_API_KEY|_KEY|_TOKEN|_SECRET|_PASSWORD)$")
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}|\bBearer\s+[A-Za-z0-9._~+/=-]{16,}")


def redact_secrets(text: str) -> str:
    """`text` with the value of every key variable of the environment, and every key-shaped
    token (`sk-...`, `Bearer ...`), replaced by `***`. For error texts and log values, not hot paths."""
    for name, value in os.environ.items():
        if len(value) >= 8 and value in text and _SECRET_VARIABLE.search(name.upper()):
            text = text.replace(value, MASK)
    return _KEY_SHAPED.sub(MASK, text) if ("-" in text or "Bearer" in text) else text


def mask_url(url: str) -> str:
    """A URL as it may be shown: its password, if any, replaced by `***`."""
    return redact(url)


def has_password(url: str) -> bool:
    """Whether `url` carries a password (that showing it would disclose)."""
    return any(m["password"] not in ("", MASK) for m in _CREDENTIALS.finditer(url))


def redact_log_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: string values of a log line with their URLs' passwords and API keys masked."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact_secrets(redact(value))
    return event
