"""memory: the store's ranking, decay, pruning and forgetting, and memories carried across executions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from qmcp.agentframework.errors import InvalidConfigError, MixinError
from qmcp.agentframework.mixins import MemoryMixin, RunResources
from qmcp.agentframework.models import ExecutionStatus
from qmcp.agentframework.store import Database, MemoryStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_recall_ranks_by_overlap_and_importance_and_refreshes(db, clock):
    store = MemoryStore(db, clock=clock)
    budget = await store.remember(
        "planner", "Lisbon offsite budget is 20k euros", ["planning"], importance=0.9
    )
    hotel = await store.remember("planner", "Lisbon hotel near the river", importance=0.5)
    await store.remember("planner", "Berlin office plants need water", importance=1.0)
    await store.remember("other", "Lisbon budget of another agent", importance=1.0)
    clock.advance(1)

    recalled = await store.recall("planner", "What is the Lisbon budget?")
    assert [r.memory.id for r in recalled] == [budget.id, hotel.id]  # Berlin shares no word
    fresh = 0.5 ** (1 / 7)
    assert [r.relevance for r in recalled] == pytest.approx([1.0 * 0.9 * fresh, 0.5 * 0.5 * fresh])

    stored = {m.id: m for m in await store.memories("planner")}
    assert stored[budget.id].access_count == 1 and stored[hotel.id].access_count == 1
    assert stored[budget.id].last_accessed_at.replace(tzinfo=UTC) == clock.now
    assert sum(m.access_count for m in stored.values()) == 2

    assert [r.memory.id for r in await store.recall("planner", "Lisbon budget", tags=["planning"])] == [
        budget.id
    ]
    assert len(await store.recall("planner", "Lisbon", limit=1)) == 1
    assert await store.recall("planner", "Tokyo weather") == []
    everything = await store.recall("planner", "", limit=10)  # no words: importance × freshness
    assert everything[0].memory.content == "Berlin office plants need water"


async def test_relevance_decays_with_a_half_life(db, clock):
    store = MemoryStore(db, clock=clock)
    old = await store.remember("a", "deploy the service on friday", importance=0.8)
    clock.advance(7)
    new = await store.remember("a", "deploy the service on monday", importance=0.8)

    assert store.freshness(old) == pytest.approx(0.5)
    assert store.freshness(new) == pytest.approx(1.0)
    assert MemoryStore(db, half_life_days=14, clock=clock).freshness(old) == pytest.approx(0.5**0.5)
    recalled = await store.recall("a", "deploy service")
    assert [r.memory.id for r in recalled] == [new.id, old.id]
    assert [r.relevance for r in recalled] == pytest.approx([0.8, 0.4])
    # Recalling is using: both are fresh again.
    assert [r.relevance for r in await store.recall("a", "deploy service")] == pytest.approx([0.8, 0.8])


async def test_prune_keeps_the_highest_scoring(db, clock):
    store = MemoryStore(db, clock=clock)
    stale = await store.remember("a", "stale but important", importance=0.9)
    clock.advance(21)  # freshness 1/8: score 0.1125
    minor = await store.remember("a", "fresh but minor", importance=0.1)
    major = await store.remember("a", "fresh and major", importance=0.7)
    middle = await store.remember("a", "fresh and middling", importance=0.3)
    await store.remember("b", "someone else's", importance=0.0)

    assert await store.prune("a", keep=2) == 2
    assert {m.id for m in await store.memories("a")} == {major.id, middle.id}
    assert stale.id not in {m.id for m in await store.memories("a")} and minor.id
    assert await store.prune("a", keep=5) == 0
    assert len(await store.memories("b")) == 1


async def test_forget_by_id_by_tags_or_everything(db):
    store = MemoryStore(db)
    first = await store.remember("a", "one", ["x", "y"])
    await store.remember("a", "two", ["x"])
    await store.remember("a", "three", ["y"])
    theirs = await store.remember("b", "four", ["x", "y"])

    assert await store.forget("a", memory_id=theirs.id) == 0  # not a's memory
    assert await store.forget("a", tags=["x", "y"]) == 1  # carrying all the tags
    assert first.id not in {m.id for m in await store.memories("a")}
    assert await store.forget("a", memory_id=(await store.memories("a", ["x"]))[0].id) == 1
    assert await store.forget("a") == 1
    assert await store.memories("a") == [] and len(await store.memories("b")) == 1


async def test_store_rejects_nonsense(db):
    store = MemoryStore(db)
    with pytest.raises(InvalidConfigError, match="importance must be between 0 and 1"):
        await store.remember("a", "x", importance=1.5)
    with pytest.raises(InvalidConfigError, match="content is empty"):
        await store.remember("a", "  ")
    with pytest.raises(InvalidConfigError, match="keep must be 0 or more"):
        await store.prune("a", keep=-1)
    with pytest.raises(InvalidConfigError, match="half_life_days must be positive"):
        MemoryStore(db, half_life_days=0)


async def test_memories_carry_over_to_the_next_execution(db_url, agent, scripted, run_one):
    model, script = scripted(replies=["Budget: 20k euros for 12 people", "It was 20k euros", "No idea"])
    options = {"memory": {"tags": ["project-x"], "importance": 0.8}}
    archivist = agent("archivist", model=model, capabilities=["memory"], mixins=options)

    first, (step,) = await run_one(db_url, archivist, "Plan the Lisbon offsite budget\nfor 12 people")
    assert first.status == ExecutionStatus.COMPLETED, first.error
    remembered = step.output["mixins"]["memory"]
    assert remembered["recalled"] == [] and isinstance(remembered["remembered"], int)

    second, (step,) = await run_one(db_url, archivist, "Remind me of the Lisbon budget")
    assert second.status == ExecutionStatus.COMPLETED, second.error
    memory = "Task: Plan the Lisbon offsite budget\nAnswer: Budget: 20k euros for 12 people"
    assert memory in script.calls[1].system
    assert "What you remember from earlier work" in script.calls[1].system
    assert [m["content"] for m in step.output["mixins"]["memory"]["recalled"]] == [memory]

    async with Database(db_url) as db:
        stored = await MemoryStore(db).memories("archivist")
    assert [(m.tags, m.importance) for m in stored] == [(["s", "project-x"], 0.8)] * 2

    stranger = agent("stranger", model=model, capabilities=["memory"])
    _, (step,) = await run_one(db_url, stranger, "Remind me of the Lisbon budget")
    assert step.output["mixins"]["memory"]["recalled"] == []
    assert "What you remember" not in script.calls[2].system


async def test_max_memories_prunes_after_remembering(sqlite_url, agent, scripted, run_one):
    model, _ = scripted()
    keeper = agent("keeper", model=model, capabilities=["memory"], mixins={"memory": {"max_memories": 2}})
    for task in ("first task", "second task", "third task"):
        result, (step,) = await run_one(sqlite_url, keeper, task)
        assert result.status == ExecutionStatus.COMPLETED, result.error
    assert step.output["mixins"]["memory"]["pruned"] == 1
    async with Database(sqlite_url) as db:
        assert len(await MemoryStore(db).memories("keeper")) == 2


async def test_memory_needs_a_database(agent, hook_context):
    ctx = hook_context(agent("a", capabilities=["memory"]), prompt="x", resources=RunResources())
    with pytest.raises(MixinError, match="needs a runner with a database"):
        await MemoryMixin().before_model(ctx)


@pytest.mark.parametrize("capabilities", [["reasoning", "memory"], ["memory", "reasoning"]])
async def test_the_answer_is_remembered_not_the_reasoning(sqlite_url, agent, scripted, run_one, capabilities):
    model, _ = scripted(replies=["Reasoning: Porto is cheaper than Lisbon.\nAnswer: Go to Porto."])
    result, _ = await run_one(sqlite_url, agent("sage", model=model, capabilities=capabilities), "Where to?")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    async with Database(sqlite_url) as db:
        (memory,) = await MemoryStore(db).memories("sage")
    assert memory.content == "Task: Where to?\nAnswer: Go to Porto."
