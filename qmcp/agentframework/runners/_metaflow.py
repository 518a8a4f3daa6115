"""MetaflowRunner: a topology becomes a Metaflow flow, which Metaflow runs locally, on Kubernetes or on AWS Batch.

`run()` stores the team and creates the execution like every runner (`BaseRunner.run`), writes the
flow, and runs `python FLOW run` in a subprocess; the flow's steps record every agent call in the
same step store, so the execution is read back from the database when Metaflow is done.
`resume()` runs Metaflow's own `resume` of the execution's Metaflow run.

The runner owns the execution's lease for the whole flow run (its heartbeat goes on while Metaflow
runs) and hands its token to the flow's steps (`QMCP_EXECUTION_OWNER`, also on Kubernetes and
Batch through `--with environment`), which act for it. A cancel request stops the flow's process
group; the flow is also stopped when this process dies (Linux), so no flow runs on unowned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ...observability import get_logger, trace_environment
from ..errors import InvalidConfigError
from ..extras import require
from ..flowcall import CALLS_VARIABLE, encode_calls, import_task_plugins
from ..models import AgentType, Execution, ExecutionStatus, ExecutionStep, StepStatus, Topology
from ..store import Database, Lease, StepRecord, is_sqlite, schema_ready_variables
from ..topologies import ParallelCalls, StepEvent
from ._attempt import Attempt, Ending
from ._base import BaseRunner, EventHandler, runner
from ._config import RunConfig, RunResult
from ._flowgen import LAUNCH_VARIABLE, flow_digest, flow_file_name, generate_flow, launch_value
from ._team import Team, prepare_team
from .metaflow_helpers import EXECUTION_TAG, OWNER_VARIABLE, complete_when_recorded, prepare_calls

__all__ = ["ENVIRONMENTS", "MetaflowRunner", "export_flow", "flow_command"]

ENVIRONMENTS = ("local", "kubernetes", "batch")
_STDERR_LINES = 12
_POLL_SECONDS = 0.5
_RECORDED_POLL_SECONDS = 0.02
"""How often the runner looks whether the calls it prepared are all recorded, to complete the execution."""
_STOP_GRACE_SECONDS = 10.0


def flow_command(
    flow_file: str | Path,
    command: Literal["run", "resume"],
    *,
    environment: str = "local",
    input_data: Mapping[str, Any] | None = None,
    execution_id: uuid.UUID | str | None = None,
    origin_run_id: str | None = None,
    max_workers: int | None = None,
    max_num_splits: int | None = None,
    owner_token: str | None = None,
    trace_context: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    launch: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs (or resumes) a generated flow in `environment`.

    `run` starts execution `execution_id` on `input_data`; `resume` continues Metaflow run
    `origin_run_id`. Kubernetes and Batch add `--with kubernetes` / `--with batch`. `owner_token`
    (the lease of the process launching it), `trace_context` (`TRACEPARENT`/`TRACESTATE`, the
    launching run's span) and `launch` (`QMCP_FLOW_LAUNCH`, see `_flowgen.LAUNCH_VARIABLE`) reach every
    step, wherever it runs; `tags` are the run's Metaflow tags.

    Python runs the flow with `-P`: the flow's directory is not put first on `sys.path`, so no module
    that happens to lie next to the flow file (a `json.py`) shadows the one the flow imports.
    """
    if environment not in ENVIRONMENTS:
        raise InvalidConfigError(
            f"unknown environment {environment!r}; choose one of: {', '.join(ENVIRONMENTS)}"
        )
    argv = [python, "-P", str(flow_file), "--no-pylint", command]
    if environment != "local":
        argv += ["--with", environment]
    variables = {
        **(trace_context or {}),
        **({OWNER_VARIABLE: owner_token} if owner_token is not None else {}),
        **({LAUNCH_VARIABLE: launch} if launch is not None else {}),
    }
    if variables:
        argv += ["--with", f"environment:vars={json.dumps(variables)}"]
    if max_workers is not None:
        argv += ["--max-workers", str(max_workers)]
    if max_num_splits is not None:
        argv += ["--max-num-splits", str(max_num_splits)]
    for tag in tags:
        argv += ["--tag", tag]
    if command == "run":
        argv += ["--input-json", json.dumps(dict(input_data or {}))]
        if execution_id is not None:
            argv += ["--execution-id", str(execution_id)]
    elif origin_run_id is not None:
        argv += ["--origin-run-id", origin_run_id]
    return argv


def export_flow(
    topology: Topology | Mapping[str, Any],
    agents: Mapping[str, AgentType | Mapping[str, Any]],
    directory: str | Path,
    *,
    config: RunConfig | None = None,
) -> Path:
    """Write the Metaflow flow of a topology into `directory`; returns its path (`NAME_flow.py`).

    What `qmcp agents topologies export NAME --metaflow DIR` calls.
    """
    require("metaflow", extra="metaflow", feature="exporting a Metaflow flow", load=False)
    path, _ = _write_flow(_team(topology, agents), Path(directory), config or RunConfig())
    return path


def _write_flow(team: Team, directory: Path, config: RunConfig) -> tuple[Path, str]:
    """Write the team's flow into `directory`; its path and the digest of the source written (`flow_digest`)."""
    source = generate_flow(team, config)
    path = directory / flow_file_name(team.topology.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(source)
    partial.replace(path)  # atomic: a Metaflow process never reads half a file
    return path, flow_digest(source)


def _team(
    topology: Topology | Mapping[str, Any], agents: Mapping[str, AgentType | Mapping[str, Any]]
) -> Team:
    # Models are checked where the flow runs (a cluster may hold keys this machine lacks), so
    # validate the team here against the offline model.
    return prepare_team(topology, agents, {}, model_override="test")


@runner
class MetaflowRunner(BaseRunner):
    """Runs each topology as a generated Metaflow flow: one step per agent call, `foreach` for parallel ones."""

    runner_type = "metaflow"
    option_names = ("output_dir", "environment")

    def __init__(
        self,
        output_dir: str | Path = "./generated_flows",
        environment: str = "local",
        config: RunConfig | None = None,
        db_url: str | None = None,
        *,
        on_event: EventHandler | None = None,
        origin: str = "python",
        stream: bool = False,
    ) -> None:
        require("metaflow", extra="metaflow", feature="the Metaflow runner", load=False)
        # Steps run in Metaflow's task processes: `on_event` hears of them from their rows, no deltas.
        super().__init__(config=config, db_url=db_url, on_event=on_event, origin=origin, stream=stream)
        if environment not in ENVIRONMENTS:
            raise InvalidConfigError(
                f"unknown environment {environment!r}; choose one of: {', '.join(ENVIRONMENTS)}"
            )
        if environment != "local" and is_sqlite(self.db_url):
            raise InvalidConfigError(
                f"{environment} steps run on other machines and need a shared database: "
                "set db_url or QMCP_DATABASE_URL to postgresql+asyncpg://..."
            )
        self.output_dir = Path(output_dir)
        self.environment = environment

    def _topology_to_flow(
        self, topology: Topology | Mapping[str, Any], agents: Mapping[str, AgentType | Mapping[str, Any]]
    ) -> str:
        """The source of the topology's Metaflow flow (`ai_debate` → class `AiDebateFlow`)."""
        return generate_flow(_team(topology, agents), self.config)

    def options(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir.resolve()), "environment": self.environment}

    def launch_command(
        self,
        execution: Execution,
        flow_file: Path,
        *,
        config: RunConfig | None = None,
        owner_token: str | None = None,
        digest: str | None = None,
    ) -> list[str]:
        """The command `run()`/`resume()` start for `execution`: Metaflow's resume of its run, if there is one.

        The current trace context (the run's span, when traced) goes to every step of the flow, and the
        run is tagged with the execution. With the `digest` of the flow file written for the execution
        (`flow_digest`) and the owner's token, the flow's `start` step knows the runner launched it and
        imports no qmcp code (`_flowgen.LAUNCH_VARIABLE`)."""
        agents = len(execution.agents_snapshot)
        launch = None
        if digest is not None and owner_token is not None:
            launch = launch_value(execution.id, execution.topology_id, digest)
        options: dict[str, Any] = {
            "environment": self.environment,
            "max_workers": (config or self.config).max_concurrent,
            "max_num_splits": agents if agents > 100 else None,
            "owner_token": owner_token,
            "trace_context": trace_environment() if (config or self.config).trace_enabled else None,
            "tags": [EXECUTION_TAG.format(execution.id)],
            "launch": launch,
        }
        if execution.external_run_id and self._has_run(execution.external_run_id):
            origin = execution.external_run_id.rsplit("/", 1)[-1]
            return flow_command(flow_file, "resume", origin_run_id=origin, **options)
        return flow_command(
            flow_file, "run", input_data=execution.input_data, execution_id=execution.id, **options
        )

    # -- the execution path: Metaflow instead of the in-process topology --------------------------------

    async def _execute(
        self,
        db: Database,
        execution: Execution,
        agents: dict[str, AgentType],
        completed: dict[str, StepRecord],
        config: RunConfig,
        lease: Lease,
    ) -> RunResult:
        require("metaflow", extra="metaflow", feature="the Metaflow runner", load=False)
        team = _team(execution.topology_snapshot, agents)
        flow_file, digest = _write_flow(team, self.output_dir, config)
        self._log = get_logger(level=config.log_level)
        # The flow's tasks record their steps' usage themselves: the attempt reads it back at the end.
        attempt = Attempt(db, execution, lease, log=self._log, metrics=self.config.metrics_enabled)
        work = self._run_flow(attempt, team, flow_file, digest, config)
        return await self._make_attempt(attempt, work, config, replayable=len(completed))

    async def _run_flow(
        self, attempt: Attempt, team: Team, flow_file: Path, digest: str, config: RunConfig
    ) -> Ending:
        """The attempt's work: Metaflow runs the flow, whose steps end the execution (or fail to)."""
        db, execution, lease = attempt.db, attempt.execution, attempt.lease
        argv = self.launch_command(
            execution, flow_file, config=config, owner_token=lease.token, digest=digest
        )
        # The tasks skip the schema check this process made (see `schema_ready_variables`).
        environ = {**self._environ(lease.token), **schema_ready_variables(db.engine)}
        keys, calls = await self._prepare(db, execution, team, lease, resumes="resume" in argv)
        completer = None
        if calls is not None:
            environ[CALLS_VARIABLE] = calls
            completer = asyncio.create_task(complete_when_recorded(db, lease, keys, _RECORDED_POLL_SECONDS))
        reporter = await _StepReporter.start(db, execution.id, self.on_event) if self.on_event else None
        try:
            returncode, stderr = await _launch(argv, environ)
        finally:
            if completer is not None:
                await _stopped(completer, attempt)
            if reporter is not None:
                await reporter.stop()
        finished = await db.get_execution(execution.id)
        if returncode == 0 and finished.status != ExecutionStatus.RUNNING:
            return Ending(finished.status, error=finished.error)
        tail = "\n".join(stderr.strip().splitlines()[-_STDERR_LINES:]) or f"exit status {returncode}"
        step_error = finished.error if finished.status == ExecutionStatus.FAILED else None
        return Ending(
            ExecutionStatus.FAILED, error="\n".join(filter(None, [step_error, f"Metaflow: {tail}"]))
        )

    async def _prepare(
        self, db: Database, execution: Execution, team: Team, lease: Lease, *, resumes: bool
    ) -> tuple[list[str], str | None]:
        """The calls of a flow whose first stage is a `foreach` the join makes no call after (an ensemble),
        prepared for its tasks to make without the topology's code or the store (`flowcall`): their keys,
        and `CALLS_VARIABLE`'s value, None when they are not prepared. Only locally on SQLite, for a new
        Metaflow run of an execution none of whose calls is recorded, and calls that are plain steps."""
        path = db.sqlite_path
        plan = team.implementation.step_plan(team.agents)
        if (
            resumes
            or self.environment != "local"
            or path is None
            or plan is None
            or len(plan.stages) != 1
            or not isinstance(plan.stages[0], ParallelCalls)
            or plan.stages[0].join_owns
        ):
            return [], None
        keys = [call.key for call in plan.stages[0].calls]
        try:
            import_task_plugins()  # as the tasks do: a model they register may set a rate limit
        except InvalidConfigError:  # the tasks meet it, and record it
            return keys, None
        calls = await prepare_calls(db, execution, keys)
        if calls is None:
            return keys, None
        return keys, encode_calls(execution.id, path, lease.token, calls)

    def _environ(self, owner_token: str | None = None) -> dict[str, str]:
        environ = dict(os.environ)
        environ["QMCP_DATABASE_URL"] = self.db_url
        environ["PYTHONSAFEPATH"] = "1"  # `-P` for the processes Metaflow starts here (its tasks) too
        if owner_token is not None:
            environ[OWNER_VARIABLE] = owner_token
        environ.setdefault("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(self.output_dir.resolve()))
        return environ  # the flow file names the run's user when the environment does not (see _flowgen)

    def _has_run(self, external_run_id: str) -> bool:
        """Whether Metaflow can resume this run from here: always remotely; locally, if our datastore holds it."""
        if self.environment != "local":
            return True
        root = Path(self._environ()["METAFLOW_DATASTORE_SYSROOT_LOCAL"])
        return (root / ".metaflow" / external_run_id).is_dir()


async def _stopped(completer: asyncio.Task[None], attempt: Attempt) -> None:
    """Stop the task completing the execution for the flow's join; should it have failed, the join ran the
    topology's code instead (after waiting for it), and the flow's own outcome says how the run ended."""
    completer.cancel()
    await asyncio.wait([completer])  # raises neither its error nor, swallowed, a cancel of this task
    failure = None if completer.cancelled() else completer.exception()
    if failure is not None:
        attempt.log.info("metaflow.completion_failed", error=str(failure))


class _StepReporter:
    """Turns the step rows a flow writes into `completed`/`failed` events, for progress displays.

    Steps run in Metaflow's processes, so this polls the step table while Metaflow runs.
    """

    def __init__(self, db: Database, execution_id: uuid.UUID, listener: EventHandler) -> None:
        self.db, self.execution_id, self.listener = db, execution_id, listener
        self.reported: set[tuple[str, str, int]] = set()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, db: Database, execution_id: uuid.UUID, listener: EventHandler) -> _StepReporter:
        reporter = cls(db, execution_id, listener)
        reporter.reported = {_mark(step) for step in await db.list_steps(execution_id)}  # earlier attempts
        reporter.task = asyncio.create_task(reporter._poll())
        return reporter

    async def stop(self) -> None:
        """Stop polling, then report what the last poll missed."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await asyncio.shield(self._report())

    async def _poll(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(_POLL_SECONDS)

    async def _report(self) -> None:
        for step in await self.db.list_steps(self.execution_id):
            if _mark(step) in self.reported:
                continue
            self.reported.add(_mark(step))
            self.listener(
                StepEvent(
                    kind="completed" if step.status == StepStatus.COMPLETED else "failed",
                    key=step.key,
                    slot=step.slot,
                    agent_name=step.agent_name,
                    model=step.model,
                    usage=step.usage,
                    latency_ms=step.latency_ms,
                    error=step.error,
                )
            )


def _mark(step: ExecutionStep) -> tuple[str, str, int]:
    return (step.key, str(step.status), step.attempts)


async def _launch(argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """Run Metaflow in its own process group, so that a cancel or a timeout stops its tasks too;
    on Linux it is also told to stop when this process dies, so a killed runner leaves no flow running."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_stop_with_parent() if sys.platform == "linux" else None,
    )
    try:
        _, stderr = await process.communicate()
    except BaseException:
        await _terminate(process)
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> Callable[[], None]:
    """What the child runs before exec: SIGTERM when the process that started it dies (Metaflow's
    runtime then stops its tasks). The C library is loaded here, in the parent, so the child makes only
    the async-signal-safe `prctl` call; `ctypes` is imported here because every Metaflow task imports
    this module, and none launches a flow."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
