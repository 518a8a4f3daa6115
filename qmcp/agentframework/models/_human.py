"""Questions put to people: `HumanRequest` and its one `HumanResponse`, in the QMCP server's shapes.

A request is created by a human_in_loop gate of a run (its id is `{execution_id}:{step key}`, the
key written safe for a URL path, and the execution waits, `paused`) or by any client of the server (`POST /v1/human/requests`, with an
id of its choosing). It is answered exactly once, before it expires.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import field_serializer
from sqlmodel import JSON, Field

from ._agent import utcnow
from ._base import TableModel

__all__ = [
    "HumanRequest",
    "HumanRequestStatus",
    "HumanRequestType",
    "HumanResponse",
    "gate_execution",
    "gate_id_forms",
    "gate_key",
    "gate_request_id",
]


class HumanRequestStatus(StrEnum):
    PENDING = "pending"
    RESPONDED = "responded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class HumanRequestType(StrEnum):
    APPROVAL = "approval"
    INPUT = "input"
    REVIEW = "review"


def gate_request_id(execution_id: uuid.UUID, key: str) -> str:
    """The id of the request a run's gate at step `key` makes: the same on every replay of the run.

    The key is written so that the id can go into a URL path as it is (upstream's client does not
    encode ids): letters, digits, `_`, `-` and `:` stay, `/` becomes `.`, any other character (`#`,
    `.`, `~`, ...) becomes `~XX` per UTF-8 byte, so `pipeline/1:publish#human-after` reads
    `pipeline.1:publish~23human-after`. The mapping is one to one: two gates never share an id.
    """
    return f"{execution_id}:{_path_safe(key)}"


def gate_key(request_id: str) -> str | None:
    """The step key of a gate's id (either form: `gate_request_id`'s, or the raw key of ids made
    before gate ids were safe in a URL), or None for an id not of the gates' form."""
    if gate_execution(request_id) is None:
        return None
    written = request_id.split(":", 1)[1]
    return _key_of(written) if _SAFE_KEY.fullmatch(written) else written


def gate_id_forms(request_id: str) -> list[str]:
    """The ids a request may be stored under: `request_id`, then the other form of a gate's id (one made
    before gate ids were safe in a URL path is still found by its safe form, and the other way round)."""
    key = gate_key(request_id)
    if key is None:
        return [request_id]
    prefix = request_id.split(":", 1)[0]
    forms = [request_id, f"{prefix}:{_path_safe(key)}", f"{prefix}:{key}"]
    return list(dict.fromkeys(forms))


_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:")
_SAFE_KEY = re.compile(r"(?:[A-Za-z0-9_:.-]|~[0-9A-F]{2})*")
_TOKEN = re.compile(r"~([0-9A-F]{2})|.", re.DOTALL)


def _path_safe(key: str) -> str:
    return "".join(
        char if char in _KEPT else "." if char == "/" else "".join(f"~{byte:02X}" for byte in char.encode())
        for char in key
    )


def _key_of(written: str) -> str:
    """The key `_path_safe` wrote as `written` (escapes may spell a multi-byte character together)."""
    raw = bytearray()
    for token in _TOKEN.finditer(written):
        raw += bytes([int(token[1], 16)]) if token[1] else ("/" if token[0] == "." else token[0]).encode()
    return raw.decode("utf-8", errors="replace")


_GATE_ID = re.compile(r"([0-9a-fA-F-]{32,36}):(.*)", re.DOTALL)


def gate_execution(request_id: str) -> uuid.UUID | None:
    """The execution an id of the form reserved for gates (`{execution id}:{anything}`) names, else None."""
    match = _GATE_ID.fullmatch(request_id)
    if match is None:
        return None
    try:
        return uuid.UUID(match[1])
    except ValueError:
        return None


class HumanRequest(TableModel, table=True):
    """A question for a person: approve or reject (`options`), or answer in free text."""

    __tablename__ = "human_requests"

    id: str = Field(primary_key=True, min_length=1, max_length=300)
    request_type: str = Field(default=HumanRequestType.APPROVAL, index=True, max_length=32)
    prompt: str
    options: list[str] | None = Field(default=None, sa_type=JSON)
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    timeout_seconds: float | None = None
    status: str = Field(default=HumanRequestStatus.PENDING, index=True, max_length=32)
    correlation_id: str | None = Field(default=None, index=True, max_length=200)
    execution_id: uuid.UUID | None = Field(default=None, foreign_key="executions.id", index=True)
    """The paused execution whose gate asked, if a run did."""
    key: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    expires_at: datetime | None = None

    @field_serializer("timeout_seconds")
    def _whole_seconds(self, value: float | None) -> float | int | None:
        """A whole number of seconds reads as upstream's integer (`3600`, not `3600.0`)."""
        return int(value) if value is not None and value.is_integer() else value

    def expired(self, now: datetime | None = None) -> bool:
        """Whether a pending request is past its timeout (SQLite and PostgreSQL give UTC without zone)."""
        if self.expires_at is None:
            return False
        expires = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=UTC)
        return (now or utcnow()) >= expires

    @staticmethod
    def expiry(created_at: datetime, timeout_seconds: float | None) -> datetime | None:
        return None if timeout_seconds is None else created_at + timedelta(seconds=timeout_seconds)


class HumanResponse(TableModel, table=True):
    """The answer to a `HumanRequest` (at most one per request)."""

    __tablename__ = "human_responses"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=64)
    request_id: str = Field(foreign_key="human_requests.id", unique=True, max_length=300)
    response: str
    responded_by: str | None = Field(default=None, max_length=200)
    response_metadata: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, index=True)
