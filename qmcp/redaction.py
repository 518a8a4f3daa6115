"""Passwords in URLs never reach a terminal or a log: `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`.

Database URLs carry passwords (`--db`, `QMCP_DATABASE_URL`), and messages, hints and log lines
mention them. Every place that prints one masks it with `mask_url`; the CLI's error printer and
the log processor also pass whole texts through `redact`, for URLs quoted inside other messages.

Secrets are masked by their value, whatever the variable holding them is named: a provider may
quote the key it was sent in its error message. `redact` also masks every value of the process's
secret registry (`register_secret`: the variable an agent's `api_key_env` names, read when its model
is resolved; the server's token; the password of each database URL opened), the values of the key
variables of the environment (`*_API_KEY`, `*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, which
covers every provider's own variable), and anything shaped like a provider key. Values shorter than
`MIN_SECRET_LENGTH` are not masked: they would mask ordinary words.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import MutableMapping
from typing import Any

__all__ = [
    "MASK",
    "MAX_SECRETS",
    "MIN_SECRET_LENGTH",
    "StreamMask",
    "has_password",
    "mask_url",
    "redact",
    "redact_log_values",
    "register_secret",
]

MASK = "***"
"""What a password is replaced with, as SQLAlchemy's `render_as_string(hide_password=True)` writes it."""

# scheme://user:password@host — the password runs to the authority's last '@', so a password
# holding a raw '@' (`u:p@ss@host`) is masked whole, as URL parsers read it.
_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:'\"]*):(?P<password>[^\s/'\"]*)@(?=[^\s/@'\"]*(?:[/\s'\"?#]|$))"
)


MIN_SECRET_LENGTH = 8
"""Shorter values are not secrets worth masking: masking them would mask ordinary words."""
MAX_SECRETS = 256
"""The registry's bound: past it, the secret registered (or used) longest ago is forgotten."""

# The one place secret values are kept: insertion-ordered, most recently registered last.
_secrets: dict[str, None] = {}
_secrets_lock = threading.Lock()
_SECRET_VARIABLE = re.compile(r"(_API_KEY|_KEY|_TOKEN|_SECRET|_PASSWORD)$")
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}|\bBearer\s+[A-Za-z0-9._~+/=-]{16,}")


def register_secret(value: str | None) -> None:
    """Mask `value` in everything `redact` sees from now on (values under `MIN_SECRET_LENGTH` are ignored).

    Called where qmcp reads a secret whose variable's name does not say it is one; registering a
    value again marks it recently used, so a secret in use is never the one the bound forgets.
    """
    if value is None or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.pop(value, None)
        _secrets[value] = None
        while len(_secrets) > MAX_SECRETS:
            del _secrets[next(iter(_secrets))]


def redact(text: str) -> str:
    """`text` with the password of every URL in it, and every secret value (see the module), replaced by `***`.

    For error texts, log values, span attributes and streamed events: it reads the environment.
    """
    return _redact(text, None)


def _redact(text: str, environment: list[str] | None) -> str:
    """`redact`, with the environment's key values read already (`_environment_secrets`) or, None, now."""
    if "://" in text:  # the common case, checked without the regex
        text = _CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@" if m["password"] != MASK else m[0], text)
    if len(text) < MIN_SECRET_LENGTH:
        return text
    # Longest first: a secret holding a shorter one is masked whole.
    for value in sorted({v for v in _secret_values(environment) if v in text}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return _KEY_SHAPED.sub(MASK, text) if ("-" in text or "Bearer" in text) else text


def _environment_secrets() -> list[str]:
    """The values of the environment's key variables (`*_API_KEY`, ...): reading them costs tens of µs."""
    return [v for name, v in os.environ.items() if _SECRET_VARIABLE.search(name.upper())]


def _secret_values(environment: list[str] | None = None) -> list[str]:
    """Every value `redact` masks by value: the registry's and the key variables' of the environment
    (`environment`, when read already)."""
    with _secrets_lock:
        values = list(_secrets)
    values += _environment_secrets() if environment is None else environment
    return [v for v in values if len(v) >= MIN_SECRET_LENGTH]


_BEARER_BEFORE = re.compile(r"\bBearer\s+\Z")
MAX_HELD = 1024
"""The most text a `StreamMask` holds back: a word (a run without whitespace) longer than this is let
through masked as far as it has come, for a reply written without spaces must still stream."""


class StreamMask:
    """Masks secrets in text that arrives in pieces (a model's streamed deltas), as `redact` masks them in
    the whole text: a secret split across two pieces is masked too.

    Each piece is let through up to the last place a secret could be beginning: the word being written
    (URLs, keys and `Bearer` tokens hold no whitespace) and any tail that begins a secret value (those
    holding whitespace), at most `MAX_HELD` characters; the rest waits for the next piece, or `flush`.
    """

    def __init__(self) -> None:
        self._held = ""
        self._environment = _environment_secrets()  # read once a stream (a model call), not per piece

    def feed(self, piece: str) -> str:
        """What of the text so far can be shown now, masked; the rest is held back."""
        text = self._held + piece
        cut = _last_safe_place(text, _secret_values(self._environment))
        if len(text) - cut > MAX_HELD:
            cut = len(text) - MAX_HELD
        self._held = text[cut:]
        return _redact(text[:cut], self._environment) if cut else ""

    def flush(self) -> str:
        """What was held back, masked: the text has ended (or its attempt did)."""
        text, self._held = self._held, ""
        return _redact(text, self._environment) if text else ""


def _last_safe_place(text: str, values: list[str]) -> int:
    """Where the part of `text` that may still become (part of) a secret begins: no secret value is cut
    there, nor the word being written, nor a tail that begins a secret value."""
    cut = len(text)
    while cut > 0 and not text[cut - 1].isspace():  # the word being written
        cut -= 1
    if _BEARER_BEFORE.search(text, max(0, cut - 64), cut):
        cut = text.rfind("Bearer", 0, cut)
    for value in values:  # a tail that begins a value (one holding whitespace reaches past the word)
        at = text.find(value[0], max(0, len(text) - len(value) + 1), cut)
        while at != -1:
            if value.startswith(text[at:]):
                cut = at
                break
            at = text.find(value[0], at + 1, cut)
    moved = True
    while moved:  # a whole value the cut would split
        moved = False
        for value in values:
            at = text.find(value, max(0, cut - len(value) + 1), cut + len(value) - 1)
            if at != -1 and at < cut:
                cut, moved = at, True
    return cut


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
            event[key] = redact(value)
    return event
