"""The eval engine: every sample × variant × repeat is an ordinary execution, scored once it ends.

An eval is an `EvalRun` row whose spec holds the samples and options (`_spec.py`). Each cell runs
as an execution of its variant's stored topology with `eval_id` set and a correlation id naming the
cell (`EVAL/variant/sample/repeat`), so `executions list` shows it, and a resume finds it again.
Cells run on one `AsyncRunner` whose `max_concurrent` bounds the model calls of every cell at
once, and at most `max_concurrent` cells are in flight: one shared limit.

A resume (`resume_eval`) walks the same cells: a scored cell is skipped; a finished execution not
yet scored is scored from its stored output; an unfinished one is resumed, its paid steps replaying
for free; a missing one starts. A `judge:AGENT` scorer's calls are executions too (a one-stage
pipeline `judge-AGENT`, correlation `CELL/judge/N`), durable and counted apart in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agentframework import llm
from ..agentframework.errors import (
    ExecutionBusyError,
    InvalidConfigError,
    NotFoundError,
    PermissionDeniedError,
    UserInputError,
)
from ..agentframework.models import (
    AgentType,
    EvalRun,
    EvalScore,
    ExecutionStatus,
    Topology,
    utcnow,
)
from ..agentframework.runners import (
    AsyncRunner,
    RunConfig,
    RunResult,
    Team,
    prepare_team,
    require_trusted,
    run_result,
    start_execution,
)
from ..agentframework.store import Database, Owner
from ..app import Caller, CallerPolicy, cell_correlation, checked_run_options
from ._dataset import Dataset, Sample
from ._report import cell_answer
from ._scorers import check_scorable, check_scorer_allowed, judge_agent, parse_scorer
from ._spec import (
    JUDGE,
    SINGLE_CALL,
    EvalRequest,
    EvalSpec,
    VariantSpec,
    parse_budget,
    reserved_name,
    team_digest,
)
from ._store import add_eval, add_scores, eval_executions, eval_scores, get_eval, update_eval

__all__ = ["EvalOutcome", "EvalProgress", "prepare_eval", "resume_eval", "run_eval", "start_eval"]

_RESUMABLE = {
    ExecutionStatus.PENDING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.INTERRUPTED,
    ExecutionStatus.CANCELLED,
}
"""Statuses a resume continues. A failed cell is recorded as failed (running it again would pay
again for what failed); a paused one waits for a person (`qmcp executions respond`)."""

_FLUSH_ROWS = 64
_FLUSH_SECONDS = 1.0


@dataclass
class EvalProgress:
    """What the display shows while an eval runs."""

    eval_id: str
    total: int
    done: int = 0
    """Cells scored (a failure counts: it is recorded)."""
    failed: int = 0
    spend_usd: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class EvalOutcome:
    """How a run of the engine ended: the eval's status and how many cells it left undone."""

    eval_id: str
    status: str
    cells: int
    scored: int
    spend_usd: float
    message: str | None = None
    """One line when it stopped early (the budget)."""


ProgressHandler = Callable[[EvalProgress], None]


# -- the operations -----------------------------------------------------------------------------


async def prepare_eval(
    db: Database, request: EvalRequest, caller: Caller, *, policy: CallerPolicy | None = None
) -> EvalRun:
    """Check `request` as `caller` may make it, load its samples, store its teams and write the
    `EvalRun` (status `running`); nothing runs yet. Every refusal raises before anything is written."""
    if caller.remote and request.dataset is not None:
        raise PermissionDeniedError(
            "dataset: a client sends the samples as records; file paths are the server operator's"
        )
    check_scorer_allowed(request.scorer, caller)
    if not request.topologies and not request.single_call:
        raise InvalidConfigError("give at least one variant: --topology NAME or --single-call AGENT")
    if (request.dataset is None) == (request.records is None):
        raise InvalidConfigError("give the samples: a dataset file (--dataset) or records, not both")
    names = [*request.topologies, *(reserved_name(SINGLE_CALL, a) for a in request.single_call)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidConfigError(f"variant {repeated[0]!r} is given twice; name each variant once")
    scorer = parse_scorer(request.scorer)  # a bad scorer is refused before anything is written
    max_tokens, max_cost = (
        parse_budget(request.budget_per_sample) if request.budget_per_sample else (None, None)
    )
    options = checked_run_options(
        caller,
        policy or CallerPolicy(),
        "async",
        {
            "model_override": request.model,
            "max_tokens": max_tokens,
            "max_cost_usd": max_cost,
            "max_concurrent": request.max_concurrent,
        },
    )
    override = llm.run_override(options.config.model_override)
    if request.dataset is not None:
        dataset = Dataset.load(request.dataset, columns=request.columns, skip_bad=request.skip_bad)
    else:
        dataset = Dataset.from_records(
            request.records or [], columns=request.columns, skip_bad=request.skip_bad
        )
    samples = list(dataset.samples)[: request.samples] if request.samples else list(dataset.samples)
    if not samples:
        raise InvalidConfigError("the dataset has no samples to evaluate")
    for sample in samples:
        _check_input(sample)
    check_scorable(scorer, samples)  # a sample the scorer cannot score is told before anything is spent
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InvalidConfigError(f"sample id {duplicate!r} is used twice; give each sample its own id")
    variants: list[VariantSpec] = []
    for name in request.topologies:
        topology, agents = await db.get_topology(name)
        await require_trusted(db, agents, topology=name, override=override)
        prepare_team(topology, agents, {}, override)  # its models resolve (a bad --model is told now)
        variants.append(VariantSpec(name=name, kind="topology", digest=team_digest(topology, agents)))
    reserved = [(SINGLE_CALL, agent) for agent in request.single_call]
    judge = judge_agent(scorer)
    if judge is not None:
        reserved.append((JUDGE, judge))
    for kind, agent_name in reserved:  # checked, all of them, before any is stored
        prepare_team(*await _reserved_team(db, kind, agent_name, override, write=False), {}, override)
    for kind, agent_name in reserved:
        topology, agents = await _reserved_team(db, kind, agent_name, override)
        if kind == SINGLE_CALL:
            digest = team_digest(topology, agents)
            variants.append(
                VariantSpec(name=topology.name, kind="single-call", agent=agent_name, digest=digest)
            )
    spec = EvalSpec(
        samples=[_sample_record(s) for s in samples],
        skipped=list(dataset.skipped),
        source=request.dataset or "records",
        variants=variants,
        scorer=request.scorer,
        repeat=request.repeat,
        model=override,
        max_cost_usd=request.max_cost_usd,
        max_concurrent=int(options.runner_options.get("max_concurrent") or request.max_concurrent),
        max_tokens_per_cell=options.config.max_tokens,
        max_cost_per_cell=options.config.max_cost_usd,
        timeout_seconds=options.config.timeout_seconds,
        origin=str(caller.door),
    )
    run = EvalRun(id=f"eval-{uuid.uuid4().hex[:12]}", status="running", spec=spec.model_dump(mode="json"))
    await add_eval(db, run)
    return run


async def run_eval(
    db: Database,
    eval_id: str,
    *,
    runner_config: RunConfig | None = None,
    max_cost_usd: float | None = None,
    on_progress: ProgressHandler | None = None,
) -> EvalOutcome:
    """Run (or continue) the eval's cells to the end, or until its spend reaches its `max_cost_usd`
    (`max_cost_usd` here replaces the stored one, for this run and the next: a resume may raise
    it). Never raises for a failed cell: it is recorded. Ctrl-C (a cancel), or an error that stops
    the whole eval, leaves it `interrupted` with its finished cells scored: resumable."""
    if max_cost_usd is not None and not 0 <= max_cost_usd < math.inf:  # NaN fails both
        raise InvalidConfigError(f"--max-cost {max_cost_usd}: give a number of dollars, 0 or more")
    run = await get_eval(db, eval_id)
    spec = EvalSpec.model_validate(run.spec)
    values: dict[str, Any] = {"status": "running", "completed_at": None}
    if max_cost_usd is not None:
        spec = spec.model_copy(update={"max_cost_usd": max_cost_usd})
        run.spec = values["spec"] = spec.model_dump(mode="json")
    await update_eval(db, run.id, **values)
    engine = _Engine(db, run, spec, runner_config or RunConfig(), on_progress)
    try:
        outcome = await engine.run()
    except BaseException:
        # Keep what is known (scores, the status); if the database is what failed, the error that
        # stopped the eval is the one to report, not a second one from this bookkeeping.
        with contextlib.suppress(Exception):
            await engine.flush()
            await update_eval(db, run.id, status="interrupted")
        raise
    await update_eval(db, run.id, status=outcome.status, completed_at=utcnow())
    return outcome


async def start_eval(
    db: Database,
    request: EvalRequest,
    caller: Caller,
    *,
    policy: CallerPolicy | None = None,
    runner_config: RunConfig | None = None,
    on_progress: ProgressHandler | None = None,
    on_created: Callable[[str], None] | None = None,
) -> EvalOutcome:
    """`prepare_eval`, then `run_eval` here; `on_created` learns the eval's id before any cell runs."""
    run = await prepare_eval(db, request, caller, policy=policy)
    if on_created is not None:
        on_created(run.id)
    return await run_eval(db, run.id, runner_config=runner_config, on_progress=on_progress)


async def resume_eval(
    db: Database,
    eval_id: str,
    caller: Caller,
    *,
    max_cost_usd: float | None = None,
    runner_config: RunConfig | None = None,
    on_progress: ProgressHandler | None = None,
) -> EvalOutcome:
    """Continue an eval: nothing paid is paid again. A remote caller may resume only what a remote
    caller could have started (records, a scorer a client may name); one a live process runs is
    refused, naming it."""
    run = await get_eval(db, eval_id)
    spec = EvalSpec.model_validate(run.spec)
    if caller.remote and spec.source != "records":
        raise PermissionDeniedError(f"eval {run.id} reads a file of the operator's; resume it on the server")
    check_scorer_allowed(spec.scorer, caller)
    executions = await eval_executions(db, run.id)
    for row in executions:
        if ExecutionStatus(row.status) == ExecutionStatus.RUNNING:
            execution = await db.get_execution(row.id)  # observed: a dead owner reads interrupted
            if execution.status == ExecutionStatus.RUNNING:
                raise ExecutionBusyError(
                    f"eval {run.id} is running: its execution {execution.id} runs in pid "
                    f"{execution.owner_pid} on {execution.owner_host}; wait for it, or stop it (Ctrl-C) first"
                )
    if run.status == "completed" and max_cost_usd is None:
        scored = len(await eval_scores(db, run.id))
        if scored == spec.cells:
            return EvalOutcome(
                run.id, run.status, spec.cells, scored, sum(row.cost_usd for row in executions)
            )
    return await run_eval(
        db, run.id, runner_config=runner_config, max_cost_usd=max_cost_usd, on_progress=on_progress
    )


# -- the engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    sample: Any
    variant: VariantSpec
    repeat: int
    correlation: str


@dataclass
class _Team:
    topology: Topology
    agents: dict[str, AgentType]
    prepared: Team
    """The team checked once (`prepare_team`); each cell runs it with its sample's input."""


@dataclass
class _Engine:
    db: Database
    record: EvalRun
    spec: EvalSpec
    base_config: RunConfig
    on_progress: ProgressHandler | None
    scorer: Any = None
    runner: AsyncRunner = field(init=False)
    progress: EvalProgress = field(init=False)
    stopped: bool = False
    _teams: dict[str, _Team] = field(default_factory=dict)
    _judges: dict[str, _Team] = field(default_factory=dict)
    _judge_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _executions: dict[str, Any] = field(default_factory=dict)
    _scored: set[tuple[str, str, int]] = field(default_factory=set)
    _pending: list[EvalScore] = field(default_factory=list)
    _flushed_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.runner = AsyncRunner(self.base_config, self.db.url, max_concurrent=self.spec.max_concurrent)
        self.progress = EvalProgress(self.record.id, self.spec.cells)

    async def run(self) -> EvalOutcome:
        self.scorer = parse_scorer(self.spec.scorer)
        for row in await eval_scores(self.db, self.record.id):
            self._scored.add((row.sample_id, row.variant, row.repeat))
            self.progress.done += 1
            self.progress.failed += row.score is None
        for row in await eval_executions(self.db, self.record.id):
            self._executions[row.correlation_id] = row
            self.progress.spend_usd += row.cost_usd
            self.progress.tokens += row.input_tokens + row.output_tokens
        for variant in self.spec.variants:
            self._teams[variant.name] = await self._variant_team(variant)
        self._report()
        cells = self._cells()
        workers = min(self.spec.max_concurrent, self.spec.cells)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._work(cells))
        except BaseExceptionGroup as failed:  # what stopped one worker stopped them all: say it once
            raise failed.exceptions[0] from None
        await self.flush()
        status = "stopped (budget)" if self.stopped else "completed"
        message = None
        if self.stopped:
            left = self.spec.cells - self.progress.done
            message = (
                f"eval {self.record.id} stopped: it spent ${self.progress.spend_usd:.4f} of its "
                f"--max-cost ${self.spec.max_cost_usd:g}; {left} of {self.spec.cells} cells not run "
                f"(continue with: qmcp eval resume {self.record.id} --max-cost USD)"
            )
        return EvalOutcome(
            self.record.id, status, self.spec.cells, self.progress.done, self.progress.spend_usd, message
        )

    def _cells(self) -> Iterator[_Cell]:
        """Sample by sample, every variant and repeat of a sample together, so that a partial eval
        (stopped by its budget) still compares the variants on the same samples."""
        for s_index, record in enumerate(self.spec.samples):
            sample = Sample(
                id=record["id"],
                input=record["input"],
                target=record.get("target"),
                metadata=record.get("metadata") or {},
            )
            for repeat in range(self.spec.repeat):
                for v_index, variant in enumerate(self.spec.variants):
                    yield _Cell(
                        sample, variant, repeat, cell_correlation(self.record.id, v_index, s_index, repeat)
                    )

    async def _work(self, cells: Iterator[_Cell]) -> None:
        for cell in cells:  # workers share the iterator: each cell is taken once
            if (cell.sample.id, cell.variant.name, cell.repeat) in self._scored:
                continue
            await self._cell(cell)

    async def _cell(self, cell: _Cell) -> None:
        team = self._teams[cell.variant.name]
        found = self._executions.get(cell.correlation)
        if found is None and self._over_budget():
            self.stopped = True
            return
        try:
            result = await self._execution(found, team, cell.sample.input, cell.correlation)
        except UserInputError as error:  # the cell could not start or resume: recorded, not fatal
            await self._record(cell, None, None, f"failed: {error}")
            return
        if result.status != ExecutionStatus.COMPLETED or result.error is not None:
            why = result.error or (
                "waiting for a person's answer"
                if result.status == ExecutionStatus.PAUSED
                else "no error recorded"
            )
            await self._record(cell, result.execution_id, None, f"{result.status}: {why}")
            return
        answer = cell_answer(result.output)
        try:
            score = await self.scorer.score(cell.sample, answer, judge=self._judge(cell))
        except ExecutionBusyError:
            raise
        except Exception as error:  # a python: scorer's bug or a failed judge: this cell's failure
            await self._record(
                cell, result.execution_id, None, f"scorer failed: {type(error).__name__}: {error}"
            )
            return
        await self._record(cell, result.execution_id, float(score.value), score.explanation)

    async def _execution(
        self, found: Any, team: _Team, input_data: Mapping[str, Any], correlation: str
    ) -> RunResult:
        """The cell's (or judge call's) execution run to its end: started, resumed, or as stored."""
        if found is None:
            prepared = dataclasses.replace(team.prepared, input_data=dict(input_data))
            config = self.base_config.model_copy(
                update={
                    "model_override": self.spec.model,
                    "max_tokens": self.spec.max_tokens_per_cell,
                    "max_cost_usd": self.spec.max_cost_per_cell,
                    "timeout_seconds": self.spec.timeout_seconds or self.base_config.timeout_seconds,
                    "correlation_id": correlation,
                }
            )
            execution, lease = await start_execution(
                self.db,
                prepared,
                config,
                runner_type=self.runner.runner_type,
                runner_options=self.runner.options(),
                owner=Owner.this_process(),
                origin=self.spec.origin,
                stored=team.topology,
                eval_id=self.record.id,
            )
            assert lease is not None
            result = await self.runner.run_started(self.db, execution, lease)
            paid_before = 0.0
            tokens_before = 0
        elif ExecutionStatus(found.status) in _RESUMABLE:
            result = await self.runner.resume(found.id)
            paid_before = found.cost_usd
            tokens_before = found.input_tokens + found.output_tokens
        else:
            return run_result(await self.db.get_execution(found.id))
        self.progress.spend_usd += result.cost_usd - paid_before
        self.progress.tokens += result.input_tokens + result.output_tokens - tokens_before
        return result

    def _judge(self, cell: _Cell) -> Callable[[str, str], Any]:
        calls = itertools.count()

        async def judge(agent: str, prompt: str) -> str:
            team = await self._judge_team(agent)
            correlation = f"{cell.correlation}/judge/{next(calls)}"
            result = await self._execution(
                self._executions.get(correlation), team, {"prompt": prompt}, correlation
            )
            if result.status != ExecutionStatus.COMPLETED or result.error is not None:
                raise RuntimeError(f"the judge {agent} did not answer ({result.status}: {result.error})")
            return cell_answer(result.output)

        return judge

    async def _judge_team(self, agent: str) -> _Team:
        async with self._judge_lock:
            if agent not in self._judges:
                topology, agents = await _reserved_team(self.db, JUDGE, agent, self.spec.model)
                self._judges[agent] = _Team(
                    topology, agents, prepare_team(topology, agents, {}, self.spec.model)
                )
            return self._judges[agent]

    async def _variant_team(self, variant: VariantSpec) -> _Team:
        topology, agents = await self.db.get_topology(variant.name)
        if team_digest(topology, agents) != variant.digest:
            raise UserInputError(
                f"topology {variant.name!r} (or one of its agents) changed since eval {self.record.id} "
                "began; its remaining cells would not be comparable. Put the definition back, or start "
                "a new eval"
            )
        await require_trusted(self.db, agents, topology=variant.name, override=self.spec.model)
        return _Team(topology, dict(agents), prepare_team(topology, agents, {}, self.spec.model))

    def _over_budget(self) -> bool:
        return self.spec.max_cost_usd is not None and self.progress.spend_usd >= self.spec.max_cost_usd

    async def _record(
        self, cell: _Cell, execution_id: uuid.UUID | None, score: float | None, explanation: str
    ) -> None:
        self._pending.append(
            EvalScore(
                eval_id=self.record.id,
                sample_id=cell.sample.id,
                variant=cell.variant.name,
                repeat=cell.repeat,
                execution_id=execution_id,
                score=score,
                explanation=explanation,
            )
        )
        self._scored.add((cell.sample.id, cell.variant.name, cell.repeat))
        self.progress.done += 1
        self.progress.failed += score is None
        self._report()
        if len(self._pending) >= _FLUSH_ROWS or time.monotonic() - self._flushed_at >= _FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        """Write the scores not written yet (in batches: one transaction per batch, not per cell)."""
        rows, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        await add_scores(self.db, rows)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


async def _reserved_team(
    db: Database, kind: str, agent_name: str, override: str | None, *, write: bool = True
) -> tuple[Topology, dict[str, AgentType]]:
    """The stored one-stage pipeline of a single-call baseline or a judge (`single-call-AGENT`,
    `judge-AGENT`): made on first use (`write=False`: only checked, the team returned unsaved); a
    topology of that name that is something else is refused."""
    agent = await db.get_agent(agent_name)
    name = reserved_name(kind, agent_name)
    await require_trusted(db, {"only": agent}, topology=name, override=override)
    wanted = Topology(
        name=name,
        topology_type="pipeline",
        description=f"qmcp eval: one call to {agent_name}"
        + (" as the judge" if kind == JUDGE else " (the single-call baseline)"),
        config={},
    )
    try:
        stored, agents = await db.get_topology(name)
    except NotFoundError:
        stored, agents = None, {}
    if stored is not None:
        if stored.topology_type != "pipeline" or {s: a.name for s, a in agents.items()} != {
            "only": agent_name
        }:
            raise InvalidConfigError(
                f"topology {name!r} exists and is not qmcp eval's one call to {agent_name!r}; "
                f"rename or delete it (qmcp agents topologies delete {name})"
            )
        return stored, dict(agents)
    if not write:
        return wanted, {"only": agent}
    saved, saved_agents = await db.save_team(wanted, {"only": agent})
    return saved, dict(saved_agents)


def _check_input(sample: Any) -> None:
    """What `prepare_team` checks of a run's input, once per sample (the cells reuse the team
    checked once per variant): a JSON object without NUL characters (PostgreSQL refuses them)."""
    if not isinstance(sample.input, dict):
        raise InvalidConfigError(f"sample {sample.id!r}: its input must be a JSON object")
    if "\\u0000" in json.dumps(sample.input):
        raise InvalidConfigError(f"sample {sample.id!r}: its input holds a NUL character; remove it")


def _sample_record(sample: Any) -> dict[str, Any]:
    return {"id": sample.id, "input": sample.input, "target": sample.target, "metadata": sample.metadata}
