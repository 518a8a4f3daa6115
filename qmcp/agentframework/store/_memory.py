"""`MemoryStore`: remember, recall, forget and prune an agent's memories in the database.

Relevance = word overlap with the query × importance × freshness. Freshness halves every
`half_life_days` since the memory was last used (remembered or recalled), so memories that keep
proving useful stay fresh while unused ones fade and are pruned first. Scoring runs in Python
over one agent's memories, which pruning keeps bounded, so it works the same on SQLite and
PostgreSQL without a search extension.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, delete, update
from sqlmodel import col, select

from ..errors import InvalidConfigError
from ..models import AgentMemory, utcnow
from ._database import Database

__all__ = ["MemoryStore", "Recollection"]

_WORD = re.compile(r"[^\W_]+")
# Words too common to tell what a memory is about, and the labels topologies put around a task.
_STOP_TEXT = (
    "the and for are but not you all any can had her was one our out has him his how its may new "
    "now see two who did get let say she too use that with have this will your from they what "
    "when make than then them been were which their there about would these into could other some "
    "such only also more most very just should answer task reply"
)
_STOP_WORDS = frozenset(_STOP_TEXT.split())


def _words(text: str) -> frozenset[str]:
    """The words that count for relevance: lowercase, at least 3 letters, no stop words."""
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP_WORDS)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Recollection:
    """A recalled memory and how relevant it was to the query."""

    memory: AgentMemory
    relevance: float


class MemoryStore:
    """An agent's long-term memory, persisted in the run's database across executions.

    `clock` is injectable so decay can be tested without waiting for days.
    """

    def __init__(
        self, db: Database, *, half_life_days: float = 7.0, clock: Callable[[], datetime] = utcnow
    ) -> None:
        if half_life_days <= 0:
            raise InvalidConfigError(f"half_life_days must be positive, got {half_life_days}")
        self.db = db
        self.half_life_days = half_life_days
        self.clock = clock

    async def remember(
        self, agent: str, content: str, tags: Iterable[str] = (), importance: float = 0.5
    ) -> AgentMemory:
        """Store one memory for `agent` and return it (with its id)."""
        if not content.strip():
            raise InvalidConfigError("nothing to remember: the content is empty")
        if not 0.0 <= importance <= 1.0:
            raise InvalidConfigError(f"importance must be between 0 and 1, got {importance}")
        now = self.clock()
        memory = AgentMemory(
            agent_name=agent,
            content=content,
            tags=list(dict.fromkeys(tags)),
            importance=importance,
            created_at=now,
            last_accessed_at=now,
        )
        async with self.db.sessions() as session, session.begin():
            session.add(memory)
        return memory

    async def memories(self, agent: str, tags: Sequence[str] | None = None) -> list[AgentMemory]:
        """Every memory of `agent` (carrying all of `tags`, when given), oldest first."""
        query = select(AgentMemory).where(AgentMemory.agent_name == agent).order_by(col(AgentMemory.id))
        async with self.db.sessions() as session:
            rows = list((await session.exec(query)).all())
        if tags:
            wanted = set(tags)
            rows = [m for m in rows if wanted <= set(m.tags)]
        return rows

    def freshness(self, memory: AgentMemory, now: datetime | None = None) -> float:
        """1.0 for a memory used just now, halving every `half_life_days` since its last use."""
        age = (_aware(now or self.clock()) - _aware(memory.last_accessed_at)).total_seconds()
        return float(0.5 ** (max(age, 0.0) / 86_400 / self.half_life_days))

    def score(self, memory: AgentMemory, now: datetime | None = None) -> float:
        """Importance × freshness: what a memory is worth without a query (used by `prune`)."""
        return memory.importance * self.freshness(memory, now)

    def relevance(self, memory: AgentMemory, query: str, now: datetime | None = None) -> float:
        """Word overlap with `query` (the share of its words the memory contains) × `score`.

        A query without words counts every memory as overlapping, so recall falls back to the
        most important, freshest memories.
        """
        wanted = _words(query)
        overlap = len(wanted & _words(memory.content)) / len(wanted) if wanted else 1.0
        return overlap * self.score(memory, now)

    async def recall(
        self, agent: str, query: str, tags: Sequence[str] | None = None, limit: int = 5
    ) -> list[Recollection]:
        """The `limit` memories most relevant to `query`, best first; recalling refreshes them."""
        now = self.clock()
        scored = [
            Recollection(memory, self.relevance(memory, query, now))
            for memory in await self.memories(agent, tags)
        ]
        best = sorted(
            (r for r in scored if r.relevance > 0),
            key=lambda r: (r.relevance, r.memory.id or 0),
            reverse=True,
        )[: max(limit, 0)]
        if best:
            ids = [r.memory.id for r in best]
            async with self.db.sessions() as session, session.begin():
                await session.exec(
                    update(AgentMemory)
                    .where(col(AgentMemory.id).in_(ids))
                    .values(last_accessed_at=now, access_count=col(AgentMemory.access_count) + 1)
                )
            for recollection in best:
                recollection.memory.last_accessed_at = now
                recollection.memory.access_count += 1
        return best

    async def forget(
        self, agent: str, memory_id: int | None = None, tags: Sequence[str] | None = None
    ) -> int:
        """Delete `agent`'s memory `memory_id`, its memories carrying all of `tags`, or (neither) all.

        Returns how many were deleted.
        """
        conditions = [col(AgentMemory.agent_name) == agent]
        if memory_id is not None:
            conditions.append(col(AgentMemory.id) == memory_id)
        if tags:
            conditions.append(col(AgentMemory.id).in_([m.id for m in await self.memories(agent, tags)]))
        return await self._delete(*conditions)

    async def prune(self, agent: str, keep: int) -> int:
        """Keep the `keep` highest-scoring memories of `agent` and delete the rest; returns how many went."""
        if keep < 0:
            raise InvalidConfigError(f"keep must be 0 or more, got {keep}")
        now = self.clock()
        ranked = sorted(
            await self.memories(agent),
            key=lambda m: (self.score(m, now), m.id or 0),
            reverse=True,
        )
        doomed = [m.id for m in ranked[keep:]]
        if not doomed:
            return 0
        return await self._delete(col(AgentMemory.id).in_(doomed))

    async def _delete(self, *conditions: ColumnElement[bool]) -> int:
        async with self.db.sessions() as session, session.begin():
            result = await session.exec(delete(AgentMemory).where(*conditions))
        return result.rowcount
