"""The execution service: every (status, action) pair of its transition table, claims, leases, fencing.

Each test runs on SQLite and on PostgreSQL (when configured). States are set up with raw updates;
everything the test then does goes through `db.executions`, the only writer of the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _clock import FakeClock
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from qmcp.agentframework.errors import (
    ConflictError,
    ExecutionBusyError,
    ExpiredError,
    InvalidConfigError,
    LeaseLostError,
    NotFoundError,
)
from qmcp.agentframework.models import Execution, ExecutionStatus, utcnow
from qmcp.agentframework.store import (
    TRANSITIONS,
    Action,
    Database,
    Lease,
    Owner,
    OwnerState,
    allowed,
    owner_state,
)

S = ExecutionStatus


def _dead_pid() -> int:
    """A pid no process can have: above the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


async def _execution(db: Database, status: ExecutionStatus, owner: str) -> tuple[Execution, Lease | None]:
    """An execution in `status` whose owner is `live` (this process, lease held), `dead` (a pid that is
    gone), `expired` (a lease that ended) or `none`."""
    execution = Execution(topology_name="t", topology_type="pipeline")
    if owner == "none":
        await db.executions.create(execution, None, runner="local")
        lease = None
    else:
        who = Owner.this_process() if owner in ("live", "expired") else Owner.this_process(pid=_dead_pid())
        lease = await db.executions.create(execution, who, runner="local")
    values: dict[str, Any] = {"status": status}
    if owner == "expired":
        values["lease_until"] = utcnow() - timedelta(seconds=5)
    await db.execute_update(execution.id, values)
    return await db.stored_execution(execution.id), lease


def _case_owner(status: ExecutionStatus) -> list[str]:
    """A running execution is tried with every kind of owner; the others have none."""
    return ["live", "dead", "expired"] if status == S.RUNNING else ["none"]


CASES = [(status, owner) for status in ExecutionStatus for owner in _case_owner(status)]


@pytest.mark.parametrize(("status", "owner"), CASES)
async def test_every_transition_of_the_table(db_url, status, owner):
    """Each action from each status does what TRANSITIONS says, and a pair it lacks changes nothing."""
    async with Database(db_url) as db:
        outcomes: dict[Action, ExecutionStatus | None] = {}
        # claim: a run or resume takes it (a live owner refuses, a dead or expired one is taken over)
        execution, _ = await _execution(db, status, owner)
        try:
            claimed, lease = await db.executions.claim(
                execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
            )
            assert claimed.owner_token == lease.token and claimed.attempts == execution.attempts + 1
            outcomes[Action.CLAIM] = claimed.status
        except (ExecutionBusyError, InvalidConfigError) as refused:
            assert (status, owner) in ((S.RUNNING, "live"), (S.COMPLETED, "none")), refused
            outcomes[Action.CLAIM] = None
            assert (await db.stored_execution(execution.id)).status == status
        # the owner ends its attempt: only a running execution, only with its lease
        for action, final in (
            (Action.COMPLETE, S.COMPLETED),
            (Action.FAIL, S.FAILED),
            (Action.PAUSE, S.PAUSED),
        ):
            execution, lease = await _execution(db, status, "live" if owner == "none" else owner)
            assert lease is not None
            ended = await db.executions.finish(lease, final, error="x")
            after = await db.stored_execution(execution.id)
            outcomes[action] = after.status if ended else None
            if ended:
                assert after.owner_token is None and after.lease_until is None and after.completed_at
            else:
                assert after.status == status
        # cancel from anywhere
        execution, _ = await _execution(db, status, owner)
        cancel = await db.executions.request_cancel(execution.id)
        after = await db.stored_execution(execution.id)
        if cancel.requested:
            assert after.cancel_requested_at is not None and after.status == S.RUNNING
            outcomes[Action.REQUEST_CANCEL] = after.status
        else:
            outcomes[Action.CANCEL] = after.status if after.status != status else None
        # queued by a server to resume when a worker is free: pending, owned by nobody
        execution, _ = await _execution(db, status, owner)
        queued = await db.executions.queue(execution.id)
        outcomes[Action.QUEUE] = queued.status if queued.status != status else None
        if outcomes[Action.QUEUE] is not None:
            assert queued.owner_token is None
        # interrupted: a running execution whose owner is gone
        execution, _ = await _execution(db, status, owner)
        (after,) = await db.executions.reap([execution])
        outcomes[Action.INTERRUPT] = after.status if after.status != status else None

    for action, outcome in outcomes.items():
        expected = TRANSITIONS.get((status, action))
        if (
            status == S.RUNNING
            and owner == "live"
            and action in (Action.CLAIM, Action.CANCEL, Action.INTERRUPT, Action.QUEUE)
        ):
            expected = None  # a live owner keeps it: refused, asked to stop, not interrupted
        if status == S.RUNNING and owner != "live" and action is Action.REQUEST_CANCEL:
            expected = None
        assert outcome == expected, f"{status} ({owner} owner) --{action}--> {outcome}, table says {expected}"


def test_the_table_covers_every_status_and_refuses_what_is_missing():
    assert {status for status, _ in TRANSITIONS} == set(ExecutionStatus) - {S.COMPLETED}
    assert all((S.COMPLETED, action) not in TRANSITIONS for action in Action)
    for status in ExecutionStatus:
        assert (TRANSITIONS.get((status, Action.CLAIM)) == S.RUNNING) == status.is_resumable
    with pytest.raises(InvalidConfigError, match="a completed execution cannot claim"):
        allowed(S.COMPLETED, Action.CLAIM)


async def test_only_one_of_many_concurrent_claims_wins(db_url):
    """Ten processes' worth of claims on one interrupted execution: one owner, the others refused."""
    async with Database(db_url) as db:
        execution, _ = await _execution(db, S.RUNNING, "dead")

    async def claim() -> str:
        async with Database(db_url) as db:  # each claimant on its own connections
            try:
                _, lease = await db.executions.claim(
                    execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
                )
            except ExecutionBusyError:
                return "refused"
            return lease.token

    outcomes = await asyncio.gather(*(claim() for _ in range(10)))
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    async with Database(db_url) as db:
        stored = await db.get_execution(execution.id)
    assert stored.owner_token == winners[0] and stored.attempts == 2
    assert [entry["attempt"] for entry in stored.history] == [1, 2]
    assert "took_over_from" in stored.history[1] and "(dead)" in stored.history[1]["took_over_from"]


async def test_a_live_owner_is_named_and_force_takes_over(db_url):
    async with Database(db_url) as db:
        execution, first = await _execution(db, S.RUNNING, "live")
        assert first is not None
        with pytest.raises(ExecutionBusyError, match=r"is running in pid \d+ on .*--wait.*--force"):
            await db.executions.claim(
                execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
            )
        claimed, second = await db.executions.claim(
            execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}, force=True
        )
        assert claimed.history[-1]["forced"] is True
        await first.renew()  # the first owner learns it lost the execution
        assert first.lost is not None
        with pytest.raises(LeaseLostError):
            await first.ensure()
        assert await db.executions.finish(first, S.COMPLETED) is None  # writes nothing
        assert (await db.get_execution(execution.id)).owner_token == second.token


async def test_owner_states(db_url):
    async with Database(db_url) as db:
        assert owner_state((await _execution(db, S.RUNNING, "live"))[0]) is OwnerState.LIVE
        assert owner_state((await _execution(db, S.RUNNING, "dead"))[0]) is OwnerState.DEAD
        assert owner_state((await _execution(db, S.RUNNING, "expired"))[0]) is OwnerState.EXPIRED
        assert owner_state((await _execution(db, S.FAILED, "none"))[0]) is OwnerState.NONE
        other_host = (await _execution(db, S.RUNNING, "dead"))[0].model_copy(
            update={"owner_host": "elsewhere"}
        )
        assert owner_state(other_host) is OwnerState.LIVE  # a remote pid cannot be checked: the lease decides


async def test_the_heartbeat_renews_the_lease_and_brings_cancel_requests(db_url, monkeypatch):
    monkeypatch.setenv("QMCP_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("QMCP_LEASE_SECONDS", "0.5")
    async with Database(db_url) as db:
        execution, lease = await _execution(db, S.RUNNING, "live")
        assert lease is not None
        before = (await db.get_execution(execution.id)).lease_until
        stopped = asyncio.Event()
        async with lease.kept(on_stop=stopped.set):
            await asyncio.sleep(0.3)
            assert (await db.get_execution(execution.id)).lease_until > before  # renewed
            assert not stopped.is_set()
            outcome = await db.executions.request_cancel(execution.id)
            assert outcome.requested
            await asyncio.wait_for(stopped.wait(), 1)
        assert lease.cancel_requested and lease.lost is None


async def test_a_stalled_owner_renews_before_its_next_call_and_stops_if_taken_over(db_url):
    async with Database(db_url) as db:
        db.executions.clock = clock = FakeClock()
        execution, lease = await _execution(db, S.RUNNING, "live")
        assert lease is not None
        first = (await db.get_execution(execution.id)).lease_until
        clock.advance(lease.ttl - lease.interval - 0.01)
        await lease.ensure()  # fresh enough: no database round trip
        assert (await db.get_execution(execution.id)).lease_until == first
        clock.advance(lease.ttl)  # stalled past its lease, with no heartbeat running
        await lease.ensure()  # nobody took it: renewed, still the owner
        assert (await db.get_execution(execution.id)).lease_until > first

        def take_over() -> Any:
            return db.executions.claim(
                execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
            )

        with pytest.raises(ExecutionBusyError):  # the renewed lease holds
            await take_over()
        clock.advance(lease.ttl + 1)  # stalled again, past the renewed lease
        await take_over()
        with pytest.raises(LeaseLostError, match="taken over by another process"):
            await lease.ensure()


async def test_timing_must_allow_two_heartbeats_per_lease(monkeypatch, sqlite_url):
    monkeypatch.setenv("QMCP_HEARTBEAT_SECONDS", "5")
    monkeypatch.setenv("QMCP_LEASE_SECONDS", "6")
    async with Database(sqlite_url) as db:
        with pytest.raises(InvalidConfigError, match="at least two heartbeats"):
            await db.executions.create(
                Execution(topology_name="t", topology_type="x"), Owner.this_process(), runner="l"
            )
        assert await db.list_executions() == []


async def test_human_answers_are_accepted_exactly_once(db_url):
    from qmcp.agentframework.models import HumanRequest

    async with Database(db_url) as db:
        execution, _ = await _execution(db, S.PAUSED, "none")
        request = HumanRequest(
            id="gate", execution_id=execution.id, key="k", prompt="ok?", options=["approve", "reject"]
        )
        await db.create_human_request(request)

    async def answer(choice: str) -> str:
        async with Database(db_url) as db:
            try:
                await db.answer_human_request(request.id, choice)
            except ConflictError as refused:
                assert "already been responded to" in str(refused)
                return "refused"
            return choice

    outcomes = await asyncio.gather(*(answer("approve" if i % 2 else "reject") for i in range(8)))
    accepted = [o for o in outcomes if o != "refused"]
    assert len(accepted) == 1
    async with Database(db_url) as db:
        stored = await db.get_human_request(request.id)
        answer = await db.get_human_response(request.id)
    assert (stored.status, answer and answer.response) == ("responded", accepted[0])


async def test_an_expired_human_request_cannot_be_answered(sqlite_url):
    from qmcp.agentframework.models import HumanRequest

    async with Database(sqlite_url) as db:
        execution, _ = await _execution(db, S.PAUSED, "none")
        request = HumanRequest(
            id="late",
            execution_id=execution.id,
            key="k",
            prompt="ok?",
            timeout_seconds=1,
            created_at=utcnow() - timedelta(seconds=5),
        )
        await db.create_human_request(request)
        with pytest.raises(ExpiredError, match="expired"):
            await db.answer_human_request(request.id, "approve")
        assert (await db.get_human_request(request.id)).status == "expired"
        with pytest.raises(ConflictError, match="already exists"):
            await db.create_human_request(HumanRequest(id="late", prompt="again?"))


async def test_unknown_execution_ids(sqlite_url):
    async with Database(sqlite_url) as db:
        with pytest.raises(NotFoundError, match="not found"):
            await db.executions.request_cancel(uuid.uuid4())


async def test_a_stalled_owners_open_transaction_cannot_block_the_takeover(db_url, monkeypatch):
    """A process stopped between a statement and its commit (SIGSTOP, a paused VM) holds a PostgreSQL
    row lock: the server ends its session once it has idled in the transaction for a lease, so the
    next owner's write goes through instead of waiting forever."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's write lock belongs to the file: its busy timeout is the guard there")
    monkeypatch.setenv("QMCP_LEASE_SECONDS", "1")
    async with Database(db_url) as db:
        execution, _ = await _execution(db, S.RUNNING, "live")
        stalled = db.sessions()
        await stalled.begin()
        await (await stalled.connection()).execute(
            update(Execution).where(col(Execution.id) == execution.id).values(heartbeat_at=utcnow())
        )  # and then nothing: the row stays locked
        started = asyncio.get_running_loop().time()
        taken = await asyncio.wait_for(
            db.execute_update(execution.id, {"lease_until": utcnow() - timedelta(seconds=1)}), 30
        )
        waited = asyncio.get_running_loop().time() - started
        assert taken and (await db.stored_execution(execution.id)).lease_until < utcnow()
        with pytest.raises(DBAPIError):  # the stalled transaction was ended: it commits nothing
            await stalled.commit()
        with contextlib.suppress(DBAPIError):
            await stalled.close()
        print(f"the takeover's write waited {waited:.2f} s for the stalled session to end")


async def test_a_heartbeat_failing_past_its_lease_asks_once_more_before_blaming_the_database(
    db_url, monkeypatch
):
    """A process stalled past its lease wakes to a connection the server ended: the renewal fails
    once, and a fresh one tells that another process took the run over (not "the database is failing")."""
    monkeypatch.setenv("QMCP_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("QMCP_LEASE_SECONDS", "0.5")
    async with Database(db_url) as db:
        execution, lease = await _execution(db, S.RUNNING, "live")
        assert lease is not None
        await db.execute_update(execution.id, {"owner_token": "another-process"})
        renew, failures = db.executions.renew, [ConnectionError("the server ended this session")]

        async def waking(this: Any) -> Any:
            if failures:
                raise failures.pop()
            return await renew(this)

        monkeypatch.setattr(lease.service, "renew", waking)
        lease._renewed -= lease.ttl + 1  # stalled past its lease
        stopped = asyncio.Event()
        async with lease.kept(on_stop=stopped.set):
            await asyncio.wait_for(stopped.wait(), 5)
        assert not failures and lease.lost is not None and "taken over by another process" in lease.lost
