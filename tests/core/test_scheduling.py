"""How independent steps run: the concurrent scheduler's worker pool, and the run's heap."""

from __future__ import annotations

import asyncio
import gc
import warnings
import weakref

import pytest
from _frozen import all_frozen

from qmcp.agentframework.errors import NonDeterminismError, PermanentModelError, StepFailedError
from qmcp.agentframework.models import EnsembleConfig, ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.runners import AsyncRunner
from qmcp.agentframework.topologies import ConcurrentScheduler, Scheduler, _heap
from qmcp.agentframework.topologies._heap import older_heap_frozen


class _Probe:
    """Steps that record how many of their model calls run at once."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.running = self.most = 0
        self.started: list[int] = []
        self.finished = self.most_in_progress = 0

    async def step(self, index: int, fail: type[BaseException] | None = None) -> int:
        self.started.append(index)
        self.most_in_progress = max(self.most_in_progress, len(self.started) - self.finished)
        async with self.scheduler.model_slot():
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0.001)
            self.running -= 1
        await asyncio.sleep(0)  # the step's commit, outside its model slot
        self.finished += 1
        if fail is StepFailedError:
            raise StepFailedError(f"k{index}", PermanentModelError("no", model="test"))
        if fail is not None:
            raise fail(f"step {index}")
        return index


@pytest.mark.parametrize("scheduler", [Scheduler(), ConcurrentScheduler(7)], ids=["sequential", "pool"])
async def test_results_keep_their_order_and_step_failures_come_back_as_values(scheduler):
    probe = _Probe(scheduler)
    failing = {3, 50}
    results = await scheduler.gather(
        [probe.step(i, StepFailedError if i in failing else None) for i in range(60)]
    )
    assert [r for i, r in enumerate(results) if i not in failing] == [
        i for i in range(60) if i not in failing
    ]
    assert all(isinstance(results[i], StepFailedError) for i in failing)
    assert probe.most == (7 if isinstance(scheduler, ConcurrentScheduler) else 1)


@pytest.mark.parametrize(("slots", "spares"), [(1, 0), (8, 2), (100, 16)])
async def test_the_pool_has_spare_workers_to_fill_slots_freed_by_committing_steps(slots, spares):
    """A worker whose step is committing holds no model slot: a spare one starts the next call.
    Spares are a quarter of the slots, at most 16."""
    scheduler = ConcurrentScheduler(slots)
    probe = _Probe(scheduler)
    await scheduler.gather([probe.step(i) for i in range(3 * slots)])
    assert probe.most == slots  # model calls in flight
    assert probe.most_in_progress == slots + spares  # steps in progress: one per worker


async def test_other_errors_propagate_after_every_step_has_run():
    scheduler = ConcurrentScheduler(4)
    probe = _Probe(scheduler)
    aws = [probe.step(i, NonDeterminismError if i == 2 else None) for i in range(20)]
    with pytest.raises(NonDeterminismError, match="step 2"):
        await scheduler.gather(aws)
    assert sorted(probe.started) == list(range(20))


async def test_a_cancelled_gather_closes_the_steps_it_never_started():
    scheduler = ConcurrentScheduler(2)
    probe = _Probe(scheduler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a warning
        task = asyncio.create_task(scheduler.gather([probe.step(i) for i in range(50)]))
        await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
    assert 2 <= len(probe.started) < 50


async def test_a_wide_ensemble_stays_within_max_concurrent(sqlite_url, agent, scripted):
    model, script = scripted(latency=0.005)
    members = {f"m{i}": agent("member", model=model) for i in range(300)}
    topology = Topology(
        name="wide", topology_type=TopologyType.ENSEMBLE, config=EnsembleConfig().model_dump()
    )
    result = await AsyncRunner(db_url=sqlite_url, max_concurrent=25).run(topology, members, {"prompt": "p"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert len(script.calls) == 300 and script.max_in_flight == 25
    assert len(result.output["members"]) == 300


def test_the_older_heap_is_frozen_only_while_a_run_runs():
    gc.collect()  # earlier tests' garbage, frozen below and freed during the block, would lower the count
    before = gc.get_freeze_count()
    with older_heap_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > before
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle made during the run is still collected
        del garbage
        assert gc.collect() >= 1
        kept = [[i] for i in range(1000)]  # the run's own objects: frozen once they survive
        assert not all_frozen(kept)
        gc.collect(1)
        assert all_frozen(kept)
    assert gc.get_freeze_count() == 0
    assert not [c for c in gc.callbacks if getattr(c, "__name__", "") == "refreeze"]  # removed after


def test_a_young_collections_survivors_are_frozen_at_once():
    """The steps in flight survive the young collections: frozen after the first one they survive,
    the middle generation's collections do not walk them again and again."""
    gc.disable()  # only the collection below
    try:
        with older_heap_frozen():
            kept = [[i] for i in range(1000)]
            assert not all_frozen(kept)
            gc.collect(0)
            assert all_frozen(kept)
    finally:
        gc.enable()


def test_a_long_run_still_collects_the_cycles_it_frees(monkeypatch):
    """Frozen survivors that become cyclic garbage are reclaimed by the full collection let
    through once the run has frozen `_REFREEZES` times, not only when the run ends."""

    class Node:
        pass

    monkeypatch.setattr(_heap, "_REFREEZES", 3)
    gc.disable()  # only the collections below, counted
    try:
        with older_heap_frozen():
            node = Node()
            node.self = node  # type: ignore[attr-defined]
            freed = weakref.ref(node)
            gc.collect(1)  # the node survives and is frozen (1)
            del node
            gc.collect()  # frozen: not collected (2)
            assert freed() is not None
            gc.collect(1)  # (3): the last refreeze
            gc.collect(1)  # unfreezes for the next full collection
            gc.collect()
            assert freed() is None
    finally:
        gc.enable()


def test_a_run_freezes_on_top_of_a_servers_start_up_heap_and_leaves_it_frozen(monkeypatch):
    """`qmcp serve` freezes its start-up heap for good; a wide run still freezes (the heap is qmcp's,
    not a host's), collects what it left when it ends, and the start-up heap is frozen again."""

    class Node:
        pass

    monkeypatch.setattr(_heap, "_start_up", 0)
    gc.collect()
    try:
        assert _heap.freeze_start_up_heap()
        start_up = gc.get_freeze_count()
        assert start_up > 0 and not _heap.freeze_start_up_heap()  # once
        with older_heap_frozen() as active:
            assert active and gc.get_freeze_count() >= start_up
            node = Node()
            node.self = node  # type: ignore[attr-defined]
            freed = weakref.ref(node)
            gc.collect(1)  # survives: frozen with the run's objects
            del node
        assert freed() is None  # the run's cyclic garbage was collected at its end
        assert gc.get_freeze_count() > 0.9 * start_up  # and the start-up heap is frozen again
        assert not [c for c in gc.callbacks if getattr(c, "__name__", "") == "_refreeze"]
    finally:
        gc.unfreeze()
