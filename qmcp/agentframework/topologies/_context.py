"""`StepContext`: the one door through which topology code calls an agent.

`await ctx.invoke(slot, prompt, key=...)` first asks the step store for `(execution, key)`.
A completed record is replayed as is — no model call, no cost. Otherwise the model is called
(with retries for transient errors) and the call is recorded as one `ExecutionStep` row before
`invoke` returns. Resume is running the same topology code again with the same execution id.

With a `lease` (every run of a runner has one), each model call first makes sure this process
still owns the execution, and each step row is written fenced by the lease's token: a process
that lost the execution to another stops before paying for another call and writes nothing.
Beside it, each call must fit the run's `budget` (`_budget.py`) and waits for its turn under the
process's rate limit of its model (`llm/_limits.py`); both cost nothing when not configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, TypeVar, cast

from ...observability import GenAI, genai_model, genai_provider, record_failure
from ...redaction import StreamMask, redact
from .. import llm
from ..errors import (
    InvalidConfigError,
    LeaseLostError,
    MalformedOutputError,
    MissingSlotError,
    ModelError,
    NonDeterminismError,
    StepFailedError,
    TransientModelError,
)
from ..flowcall import PreparedCall
from ..llm import ChatMessage, ModelReply, RateLimit, RateLimits, json_instruction, retry_transient
from ..mixins import BaseMixin, MixinContext, MixinRegistry, RunResources
from ..models import AgentConfig, AgentType, Models, StepStatus, Usage, utcnow
from ..store import StepRecord, StepStore
from ._budget import Budget, estimate_prompt_tokens
from ._heap import older_heap_frozen
from ._parsing import validate_json

if TYPE_CHECKING:
    from pydantic_ai.settings import ModelSettings

    from ..store import Lease
    from ._replaycheck import ReplayCheck

__all__ = [
    "ConcurrentScheduler",
    "RetryPolicy",
    "Scheduler",
    "SequentialScheduler",
    "StepContext",
    "StepEvent",
    "StepResult",
    "input_text",
]

T = TypeVar("T")


@dataclass(frozen=True)
class StepResult:
    """What one agent step produced; `data` holds the parsed JSON when the step asked for it.

    A replayed step (`replayed`) carries the usage it was recorded with, paid once.
    """

    key: str
    slot: str
    agent_name: str
    text: str
    data: dict[str, Any] | None = None
    replayed: bool = False
    fallback: bool = False
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class StepEvent:
    """Progress of a step, for live displays and logs. A `delta` (only from runners asked to `stream`)
    carries the next piece of the reply in `text`, while the model writes it; the step's row is still
    written once, when it is complete. `completed` and `replayed` carry the step's whole reply."""

    kind: Literal["started", "retry", "delta", "completed", "replayed", "failed"]
    key: str
    slot: str
    agent_name: str
    model: str
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    error: str | None = None
    text: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    enabled: bool = True
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0


class Scheduler:
    """How independent steps run: one at a time (LocalRunner).

    `gather` returns step failures (`StepFailedError`) as values, so a topology can tolerate
    some; anything else (a pause for a human, a non-determinism error, a bug) propagates.
    """

    concurrent: ClassVar[bool] = False  # may several steps run (and be saved) at once?

    async def gather(self, aws: Sequence[Awaitable[T]]) -> list[T | StepFailedError]:
        results: list[T | StepFailedError] = []
        for index, aw in enumerate(aws):
            try:
                results.append(await aw)
            except StepFailedError as error:
                results.append(error)
            except BaseException:  # a cancel or a pause: the steps not begun never will be
                for never in aws[index + 1 :]:
                    if inspect.iscoroutine(never):
                        never.close()
                raise
        return results

    def model_slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held for the length of each model call (not while the step is recorded)."""
        return contextlib.nullcontext()


SequentialScheduler = Scheduler


class ConcurrentScheduler(Scheduler):
    """Independent steps at once, at most `max_concurrent` model calls in flight (AsyncRunner).

    Schedulers given the same `semaphore` share its limit: an AsyncRunner's executions all do.
    """

    concurrent: ClassVar[bool] = True

    def __init__(
        self,
        max_concurrent: int,
        semaphore: asyncio.Semaphore | None = None,
        *,
        freeze_heap_above: int | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.freeze_heap_above = freeze_heap_above
        """More steps in flight than this keep the garbage collector off the older heap (`_heap.py`)."""
        self._semaphore = semaphore or asyncio.Semaphore(max_concurrent)

    async def gather(self, aws: Sequence[Awaitable[T]]) -> list[T | StepFailedError]:
        if self.freeze_heap_above is not None and min(len(aws), self.max_concurrent) > self.freeze_heap_above:
            with older_heap_frozen():
                return await self._gather(aws)
        return await self._gather(aws)

    async def _gather(self, aws: Sequence[Awaitable[T]]) -> list[T | StepFailedError]:
        """Run the steps from a pool of workers: one per model slot, plus a few spares.

        Not one task per step: a 10,000-member ensemble would otherwise start 10,000 tasks
        that mostly wait on the semaphore, each holding a started frame, a future and its
        state in memory and in every garbage collection (measured: about 15 % slower). The
        spares (a quarter more, at most 16; none below 4 slots, so one slot
        means one step at a time) take a model slot while other workers commit their
        finished steps, which a step does outside its slot: a 200-member ensemble runs 1 %
        faster. More would wait on the semaphore, whose waiter queue is scanned on every
        release (asyncio's, 3.11): 250 spares made a 10,000-member ensemble 10 % slower.
        """
        results: list[Any] = [None] * len(aws)
        queue = iter(enumerate(aws))

        async def worker() -> None:
            for index, aw in queue:
                try:
                    results[index] = await aw
                except Exception as error:  # kept, and raised below unless it is a step failure
                    results[index] = error

        try:
            workers = min(self.max_concurrent + min(self.max_concurrent // 4, 16), len(aws))
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            for _, aw in queue:  # cancelled: close the steps that never started
                if inspect.iscoroutine(aw):
                    aw.close()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StepFailedError):
                raise result
        return list(results)

    def model_slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._semaphore  # itself, not wrapped in a generator: entered once per model call


def input_text(input_data: Mapping[str, Any]) -> str:
    """The task as text: the prompt/task/question/topic field, other fields as `key: value` lines."""
    import json

    for name in ("prompt", "task", "question", "topic", "input", "query", "text"):
        value = input_data.get(name)
        if isinstance(value, str) and value.strip():
            rest = {k: v for k, v in input_data.items() if k != name}
            extra = "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in rest.items())
            return f"{value}\n{extra}".strip()
    return json.dumps(dict(input_data), ensure_ascii=False, default=str)


@dataclass
class StepContext:
    """Run state for one execution, shared by the topology code that runs in it."""

    execution_id: uuid.UUID
    agents: Mapping[str, AgentType]
    store: StepStore
    completed: dict[str, StepRecord] = field(default_factory=dict)
    scheduler: Scheduler = field(default_factory=Scheduler)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    model_override: str | None = None
    checkpoint_enabled: bool = True
    on_event: Callable[[StepEvent], None] | None = None
    unheard: frozenset[str] = frozenset()
    """Kinds of events `on_event` does nothing with, so they are never built (a runner's own handler
    with no handler of its user's does nothing with `started`: half of a step's events)."""
    prefix: str = ""
    resources: RunResources = field(default_factory=RunResources)
    teams: Mapping[str, Any] = field(default_factory=dict)
    tracer: Any = None  # an OpenTelemetry tracer when the run is traced
    lease: Lease | None = None
    """This process's ownership of the execution: checked before model calls, fencing step writes."""
    totals: Usage = field(default_factory=Usage)
    """What this attempt paid, shared with its child contexts (the execution's stored totals add it
    up over attempts)."""
    budget: Budget | None = None
    """The execution's token and cost budget, with what it spent; None when unlimited."""
    rate_limits: RateLimits | None = None
    """The process's rate limiters (`llm.rate_limits()`); None: calls are not limited."""
    stream: bool = False
    """Stream replies as `delta` events to `on_event` while they are generated (models that can)."""
    replay_check: ReplayCheck | None = None
    """A replay test (`_replaycheck.py`): every step comes from the recording, checked against it;
    no mixin hook runs, no model is called, nothing is written."""
    _configs: dict[int, AgentConfig] = field(default_factory=dict, repr=False)  # by id(agent)
    _systems: dict[int, str] = field(default_factory=dict, repr=False)  # by id(agent)
    _choices: dict[int, llm.ModelChoice] = field(default_factory=dict, repr=False)  # by id(agent)
    _models: dict[int, Any] = field(default_factory=dict, repr=False)  # resolved, by id(agent)
    _mixins: dict[str, Sequence[BaseMixin]] = field(default_factory=dict, repr=False)

    # -- composition --------------------------------------------------------------------------

    def child(self, prefix: str, agents: Mapping[str, AgentType] | None = None) -> StepContext:
        """A context whose step keys nest under `prefix` (compound topologies), sharing run state."""
        return dataclasses.replace(
            self,
            agents=self.agents if agents is None else agents,
            prefix=f"{self.prefix}{prefix}/",
            _configs={},
            _systems={},
            _choices={},
            _models={},
            _mixins={},
        )

    async def gather(self, aws: Sequence[Awaitable[T]]) -> list[T | StepFailedError]:
        """Run independent steps as the runner allows; step failures come back as values."""
        return await self.scheduler.gather(aws)

    def agent(self, slot: str) -> AgentType:
        try:
            return self.agents[slot]
        except KeyError:
            raise MissingSlotError(
                f"no agent in slot {slot!r}; slots are: {', '.join(self.agents)}"
            ) from None

    def _default_system(self, agent: AgentType) -> str:
        """The system prompt of an agent that sets none, made once per agent (one agent often fills many slots)."""
        system = self._systems.get(id(agent))
        if system is None:
            system = self._systems[id(agent)] = _default_system_prompt(agent)
        return system

    def agent_config(self, slot: str) -> AgentConfig:
        """The slot's agent's parsed config, parsed once per agent (one agent often fills many slots)."""
        agent = self.agent(slot)
        config = self._configs.get(id(agent))
        if config is None:
            config = self._configs[id(agent)] = agent.agent_config
        return config

    def model_choice(self, slot: str) -> llm.ModelChoice:
        """The model a slot's agent calls in this run, with its endpoint and key (`llm.effective_model`)."""
        agent = self.agent(slot)
        choice = self._choices.get(id(agent))
        if choice is None:
            choice = self._choices[id(agent)] = llm.effective_model(
                self.agent_config(slot), self.model_override
            )
        return choice

    def mixins_for(self, slot: str) -> Sequence[BaseMixin]:
        """The slot's agent's mixins, dependencies first (each slot its own instances)."""
        mixins = self._mixins.get(slot)
        if mixins is None:
            capabilities = self.agent_config(slot).capabilities
            if not capabilities:  # most agents: nothing to resolve or keep per slot
                return ()
            names = MixinRegistry.resolve([str(c) for c in capabilities])
            mixins = self._mixins[slot] = [MixinRegistry.create(name) for name in names]
        return mixins

    # -- the durable step ---------------------------------------------------------------------

    async def invoke(
        self,
        slot: str,
        prompt: str,
        *,
        key: str,
        schema: dict[str, Any] | None = None,
        fallback: dict[str, Any] | None = None,
        durable: bool = False,
    ) -> StepResult:
        """Call `slot`'s agent with `prompt`, or replay the recorded result of step `key`.

        With `schema`, the reply must be a JSON object of that schema: it is extracted
        tolerantly, asked for again with the error when malformed, and otherwise replaced
        by `fallback` (recorded on the step with the reason) or failed when there is none.
        `durable` replays the step even when checkpoint reads are off (`checkpoint_after`).
        """
        full_key = self.prefix + key
        agent = self.agent(slot)
        if schema is None and (plain := self._plain(slot, full_key, durable)) is not None:
            return await self._plain_call(full_key, slot, agent, *plain, prompt)
        mc = MixinContext(
            execution_id=self.execution_id,
            key=full_key,
            slot=slot,
            agent=agent,
            config=self.agent_config(slot),
            model=self.model_choice(slot).model,
            resources=self.resources,
            prompt=prompt,
            schema=schema,
        )
        if self.replay_check is not None:
            checked = self.replay_check.verify(full_key, slot, agent.name, _with_schema(prompt, schema))
            return self._replay(checked, full_key, slot, agent, mc)
        mixins = self.mixins_for(slot)
        for hook in mixins:
            await hook.on_start(mc)
        recorded = self.completed.get(full_key) if (self.checkpoint_enabled or durable) else None
        if recorded is not None:
            result = self._replay(recorded, full_key, slot, agent, mc)
        elif self.tracer is None:
            result = await self._call(mc, mixins, fallback)
        else:
            model = llm.normalize_model_string(mc.model)  # a bare `claude-...` is Anthropic's
            # Exceptions are recorded by hand, redacted and without their chain: a provider's raw
            # error (the cause of ours) may quote the API key it was sent.
            with self.tracer.start_as_current_span(
                f"{GenAI.INVOKE_AGENT} {agent.name}",
                attributes={
                    GenAI.OPERATION_NAME: GenAI.INVOKE_AGENT,
                    GenAI.AGENT_NAME: agent.name,
                    GenAI.PROVIDER_NAME: genai_provider(model),
                    GenAI.REQUEST_MODEL: genai_model(model),
                    "qmcp.step.key": full_key,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    result = await self._call(mc, mixins, fallback)
                except Exception as error:
                    # A failed step's own class says nothing: its cause's does (permanent, malformed, ...).
                    cause = error.cause if isinstance(error, StepFailedError) else error
                    record_failure(span, error, type(cause).__qualname__)
                    raise
                span.set_attributes(result.usage.opentelemetry_attributes())
        for hook in mixins:
            await hook.on_end(mc)
        return result

    def prepared_call(self, slot: str, prompt: str, *, key: str) -> PreparedCall | None:
        """Step `key`'s call as the plain step would make it (`_plain_call`), for a Metaflow task to make
        and record without this context (`flowcall`); None when it is not a plain step or is recorded."""
        full_key = self.prefix + key
        plain = self._plain(slot, full_key, durable=True)
        if plain is None:
            return None
        config, model = plain
        agent, choice, retry = self.agent(slot), self.model_choice(slot), self.retry
        return PreparedCall(
            key=full_key,
            slot=slot,
            agent_name=agent.name,
            model=model,
            base_url=choice.base_url,
            api_key_env=choice.api_key_env,
            role=str(agent.role),
            system=config.system_prompt or self._default_system(agent),
            prompt=prompt,
            settings=dict(_model_settings(config)),
            timeout_seconds=config.timeout_seconds,
            max_tool_calls=config.max_tool_calls,
            max_retries=retry.max_retries if retry.enabled else 0,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
        )

    def _plain(self, slot: str, full_key: str, durable: bool) -> tuple[AgentConfig, str] | None:
        """The slot's config and model when its call of step `full_key` is a plain step: no mixin, tracer,
        budget, rate limit or stream around it, not a replay check, and not recorded (a replay)."""
        if (
            self.replay_check is not None
            or self.tracer is not None
            or self.budget is not None
            or (self.stream and self.on_event is not None)
            or self.mixins_for(slot)
            or ((self.checkpoint_enabled or durable) and full_key in self.completed)
        ):
            return None
        config, model = self.agent_config(slot), self.model_choice(slot).model
        limits = self.rate_limits
        if limits is not None and limits.limiter(model, lambda: _config_limit(model, config)) is not None:
            return None
        return config, model

    def _replay(
        self, recorded: StepRecord, key: str, slot: str, agent: AgentType, mc: MixinContext
    ) -> StepResult:
        # A fork may give a slot another agent from its fork point on: the steps it inherited keep theirs.
        if recorded.slot != slot or (recorded.agent_name != agent.name and not recorded.inherited):
            raise NonDeterminismError(
                f"step {key!r} was recorded for slot {recorded.slot!r} (agent {recorded.agent_name!r}) "
                f"but is now asked of slot {slot!r} (agent {agent.name!r}); the topology or its agents "
                "changed since this execution started"
            )
        self._emit(
            "replayed",
            key,
            slot,
            agent.name,
            recorded.model,
            usage=recorded.usage,
            latency_ms=recorded.latency_ms,
            text=recorded.response or "",
        )
        output = recorded.output or {}
        data = output.get("data")
        if output.get("edited") and data is not None and mc.schema is not None:
            data = _checked_edit(key, data, mc.schema, mc.validator)
        mc.replayed, mc.reply, mc.data = True, recorded.response or "", data
        return StepResult(
            key=key,
            slot=slot,
            agent_name=agent.name,
            text=mc.reply,
            data=mc.data,
            replayed=True,
            fallback=bool(output.get("fallback")),
            usage=recorded.usage,
        )

    async def _call(
        self, mc: MixinContext, mixins: Sequence[BaseMixin], fallback: dict[str, Any] | None
    ) -> StepResult:
        mc.system = mc.config.system_prompt or self._default_system(mc.agent)
        prompt, schema = mc.prompt, mc.schema
        asked = _with_schema(prompt, schema)  # what the topology code asked, before any mixin
        for hook in mixins:
            await hook.before_model(mc)
        sent = asked if mc.prompt is prompt and mc.schema is schema else _with_schema(mc.prompt, mc.schema)
        messages: list[ChatMessage] = [{"role": "user", "content": sent}]
        model_settings = _model_settings(mc.config)
        record = self._record(mc.key, mc.slot, mc.agent.name, mc.model, mc.system, messages, model_settings)
        if sent != asked:  # a mixin changed it: replay tests compare the code's own (`_replaycheck.py`)
            record.request["prompt"] = asked
        name = record.agent_name  # a table model's attribute is read through SQLAlchemy: once
        self._emit("started", mc.key, mc.slot, name, mc.model)
        replies: list[ModelReply] = []
        used_fallback = False
        try:
            reply = await self._model_call(mc, mixins, messages, model_settings)
            replies.append(reply)
            if mc.schema is not None:
                for reask in range(mc.reasks + 1):
                    try:
                        mc.data = validate_json(reply.text, mc.schema)
                        if mc.validator is not None:
                            mc.data = mc.validator(mc.data)
                        break
                    except ValueError as invalid:
                        if reask == mc.reasks:
                            if fallback is None:
                                raise MalformedOutputError(
                                    f"reply is not the JSON asked for after {reask + 1} tries: {invalid}",
                                    model=mc.model,
                                ) from None
                            mc.data, used_fallback = dict(fallback), True
                            record.error = (
                                f"malformed reply after re-asking ({invalid}); used fallback {fallback}"
                            )
                            break
                        # Ask again with the error.
                        messages = [
                            *messages,
                            {"role": "assistant", "content": reply.text},
                            {
                                "role": "user",
                                "content": f"That reply was not valid: {invalid}. {json_instruction(mc.schema)}",
                            },
                        ]
                        record.request["messages"] = messages
                        reply = await self._model_call(mc, mixins, messages, model_settings)
                        replies.append(reply)
            mc.reply = reply.text
            for hook in reversed(mixins):
                await hook.after_response(mc)
        except ModelError as error:
            await self._fail(record, replies, error)
        record.response = mc.reply
        record.output = _step_output(mc, used_fallback)
        record.attempts = sum(r.attempts for r in replies)
        usage = await self._completed(record, replies)
        return StepResult(
            key=mc.key,
            slot=mc.slot,
            agent_name=name,
            text=mc.reply,
            data=mc.data,
            fallback=used_fallback,
            usage=usage,
        )

    async def _plain_call(
        self, key: str, slot: str, agent: AgentType, config: AgentConfig, model: str, prompt: str
    ) -> StepResult:
        """A step with nothing around its model call (no mixin, schema, tracer, budget, rate limit or
        stream): `_call` and `_model_call` in one frame, with no `MixinContext`, closures, hook loops,
        budget or limiter checks, and the retry loop in line (`retry_delay`).

        In a 10,000-member fan-out the event loop is CPU-bound: what the general path does around
        the call cost about 10 µs of CPU a member, 12 % of the run. This path writes the same row and
        usage, emits the same events, retries, fails, times out and stops on a lost lease as that
        one (`test_a_plain_step_is_recorded_as_the_general_path_records_it`); `invoke` takes it only
        when nothing the general path adds is configured, and replays go the general way.
        """
        system = config.system_prompt or self._default_system(agent)
        messages: list[ChatMessage] = [{"role": "user", "content": prompt}]
        model_settings = _model_settings(config)
        record = self._record(key, slot, agent.name, model, system, messages, model_settings)
        name = record.agent_name
        self._emit("started", key, slot, name, model)
        retry, lease = self.retry, self.lease
        attempt = 0
        try:
            resolved = self._resolved(slot, agent)
            with llm.calling_step(key):
                while True:
                    attempt += 1
                    try:
                        async with self.scheduler.model_slot():
                            if lease is not None:
                                await lease.ensure()  # never pay for a call in an execution we no longer own
                            reply = await llm.call_model(
                                resolved,
                                model,
                                system=system,
                                messages=messages,
                                settings=model_settings,
                                timeout_seconds=config.timeout_seconds,
                                max_tool_calls=config.max_tool_calls,
                            )
                        break
                    except TransientModelError as error:
                        self._back_off(model, error)
                        delay = llm.retry_delay(
                            error,
                            attempt,
                            max_retries=retry.max_retries if retry.enabled else 0,
                            base_delay=retry.base_delay,
                            max_delay=retry.max_delay,
                        )
                        self._emit("retry", key, slot, name, model, error=f"attempt {attempt}: {error}")
                        await asyncio.sleep(delay)
                    except ModelError as error:  # as `retry_transient`: every attempt was paid
                        error.attempts = attempt
                        raise
        except ModelError as error:
            await self._fail(record, (), error)
        if attempt != 1:
            reply = dataclasses.replace(reply, attempts=attempt)
        record.response = reply.text
        record.output = {"tool_calls": list(reply.tool_calls)} if reply.tool_calls else None
        record.attempts = reply.attempts
        usage = await self._completed(record, (reply,))
        return StepResult(key=key, slot=slot, agent_name=name, text=reply.text, usage=usage)

    def _record(
        self,
        key: str,
        slot: str,
        agent_name: str,
        model: str,
        system: str,
        messages: list[ChatMessage],
        model_settings: ModelSettings,
    ) -> StepRecord:
        """The step's row as its call begins: what is sent to the model, and to whom."""
        return StepRecord(
            execution_id=self.execution_id,
            key=key,
            slot=slot,
            agent_name=agent_name,
            model=model,
            request={"system": system, "messages": messages, "settings": dict(model_settings)},
        )

    def _resolved(self, slot: str, agent: AgentType) -> Any:
        """The slot's model, resolved once per agent and run; pydantic-ai loads only for a model that
        needs it (`llm/_calling.py`)."""
        resolved = self._models.get(id(agent))
        if resolved is None:
            resolved = self._models[id(agent)] = self.model_choice(slot).resolve(str(agent.role))
        return resolved

    def _back_off(self, model: str, error: TransientModelError) -> None:
        """A 429 that says when to come back makes every caller of the model wait, not only this one."""
        if self.rate_limits is not None and error.status_code == 429 and error.retry_after:
            self.rate_limits.back_off(model, error.retry_after)

    async def _completed(self, record: StepRecord, replies: Sequence[ModelReply]) -> Usage:
        """Record the step as completed with `replies` (its response and attempts set); its usage."""
        usage = self._account(record, replies)
        record.completed_at = utcnow()
        await self._save(record)
        self.completed[record.key] = record
        self._emit(
            "completed",
            record.key,
            record.slot,
            record.agent_name,
            record.model,
            usage=usage,
            latency_ms=record.latency_ms,
            text=record.response or "",
        )
        return usage

    async def _fail(self, record: StepRecord, replies: Sequence[ModelReply], error: ModelError) -> NoReturn:
        """Record the step as failed by `error` after `replies`, then fail it (`StepFailedError`)."""
        record.status = StepStatus.FAILED
        record.error = redact(f"{type(error).__name__}: {error}")
        record.attempts = sum(r.attempts for r in replies) + (
            0 if isinstance(error, MalformedOutputError) else error.attempts
        )
        self._account(record, replies)
        await self._save(record)
        self._emit("failed", record.key, record.slot, record.agent_name, record.model, error=record.error)
        raise StepFailedError(record.key, error, record.attempts) from error

    async def _model_call(
        self,
        mc: MixinContext,
        mixins: Sequence[BaseMixin],
        messages: list[ChatMessage],
        model_settings: ModelSettings,
    ) -> ModelReply:
        resolved = self._resolved(mc.slot, mc.agent)

        async def on_tool_call(tool: str, args: dict[str, Any]) -> None:
            for hook in mixins:
                await hook.on_tool_call(mc, tool, args)

        budget, limits = self.budget, self.rate_limits
        on_delta = mask = None
        if self.stream and self.on_event is not None:
            mask = StreamMask()  # a key split across two deltas is masked too

            def on_delta(text: str) -> None:
                if shown := mask.feed(text):
                    self._emit("delta", mc.key, mc.slot, mc.agent.name, mc.model, text=shown)

        limiter = (
            None if limits is None else limits.limiter(mc.model, lambda: _config_limit(mc.model, mc.config))
        )
        prompt_tokens = (
            0
            if budget is None and limiter is None
            else estimate_prompt_tokens(mc.system, [m["content"] for m in messages])
        )

        async def once() -> ModelReply:
            async with self.scheduler.model_slot():
                if self.lease is not None:
                    await self.lease.ensure()  # never pay for a call in an execution we no longer own
                reservation = (
                    None
                    if budget is None
                    else await budget.reserve(
                        mc.agent.name,
                        mc.model,
                        prompt_tokens,
                        mc.config.max_tokens,
                        (mc.config.max_total_tokens, mc.config.max_cost_usd),
                    )
                )
                reply = None
                try:
                    if limiter is not None:
                        await limiter.acquire(prompt_tokens + (mc.config.max_tokens or 0))
                    reply = await llm.call_model(
                        resolved,
                        mc.model,
                        system=mc.system,
                        messages=messages,
                        settings=model_settings,
                        timeout_seconds=mc.config.timeout_seconds,
                        tools=mc.tools,
                        max_tool_calls=mc.config.max_tool_calls,
                        on_tool_call=on_tool_call if mixins else None,
                        on_delta=on_delta,
                        tracer=self.tracer,
                    )
                except TransientModelError as error:
                    self._back_off(mc.model, error)
                    raise
                finally:
                    if mask is not None and (rest := mask.flush()):  # before its retry or completion
                        self._emit("delta", mc.key, mc.slot, mc.agent.name, mc.model, text=rest)
                    if reservation is not None:
                        assert budget is not None
                        budget.settle(reservation, Usage(requests=1) if reply is None else reply.usage)
                assert reply is not None
                if limiter is not None:
                    limiter.settle(
                        prompt_tokens + (mc.config.max_tokens or 0), reply.input_tokens + reply.output_tokens
                    )
                return reply

        def on_retry(attempt: int, error: TransientModelError) -> None:
            self._emit("retry", mc.key, mc.slot, mc.agent.name, mc.model, error=f"attempt {attempt}: {error}")

        with llm.calling_step(mc.key):  # for models that answer by step (`recorded:` fixtures)
            reply, attempts = await retry_transient(
                once,
                max_retries=self.retry.max_retries if self.retry.enabled else 0,
                base_delay=self.retry.base_delay,
                max_delay=self.retry.max_delay,
                on_retry=on_retry,
            )
        mc.tool_calls.extend(reply.tool_calls)
        # `dataclasses.replace` inspects the fields on every call: skip it for the usual first try
        return reply if attempts == 1 else dataclasses.replace(reply, attempts=attempts)

    async def _save(self, record: StepRecord) -> None:
        """Record a step, fenced by the lease: a lost lease writes nothing and stops the run."""
        if self.lease is None:
            await self.store.save(record, batch=self.scheduler.concurrent)
            return
        try:
            await self.store.save(record, batch=self.scheduler.concurrent, fence=self.lease.token)
        except LeaseLostError as lost:
            self.lease.mark_lost(str(lost))
            raise

    def _account(self, record: StepRecord, replies: Sequence[ModelReply]) -> Usage:
        """Put what `replies` used on `record` and on the attempt's totals; the step's usage."""
        if len(replies) == 1:  # the usual step: one reply, nothing to add up
            reply = replies[0]
            record.input_tokens, record.output_tokens = reply.input_tokens, reply.output_tokens
            record.cost_usd, record.latency_ms = reply.cost_usd, reply.latency_ms
        else:
            used = sum((r.usage for r in replies), Usage())
            record.input_tokens, record.output_tokens = used.input_tokens, used.output_tokens
            record.cost_usd, record.latency_ms = used.cost_usd, sum(r.latency_ms for r in replies)
        usage = record.usage
        self.totals.incr(usage)
        return usage

    def _emit(self, kind: Any, key: str, slot: str, agent_name: str, model: str, **extra: Any) -> None:
        if self.on_event is not None and kind not in self.unheard:
            self.on_event(StepEvent(kind, key, slot, agent_name, model, **extra))


def _config_limit(model: str, config: AgentConfig) -> RateLimit | None:
    """The rate limit the model's `ModelConfig` names: the registry's, else the agent's own."""
    found = Models.get(model)
    if (
        found is None
        and config.model_config_obj is not None
        and config.model_config_obj.model_string == model
    ):
        found = config.model_config_obj
    if found is None or (found.requests_per_minute is None and found.tokens_per_minute is None):
        return None
    return RateLimit(found.requests_per_minute, found.tokens_per_minute)


def _checked_edit(
    key: str,
    data: dict[str, Any],
    schema: dict[str, Any],
    validator: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> dict[str, Any]:
    """A structured step's reply as a person set it on a fork (`set_output`), checked as a model's reply
    is: the schema lives in the topology code, not in the stored step, so the fork cannot check the edit
    before it runs; checked here, a wrong edit fails the fork at its own step, with its key, instead of
    in the code that reads the data."""
    try:
        checked = validate_json(json.dumps(data), schema)
        return validator(checked) if validator is not None else checked
    except ValueError as invalid:
        raise InvalidConfigError(
            f"step {key!r}: the reply set for it does not fit the JSON the step asks for ({invalid}); "
            "fork again, setting a JSON object with the keys its prompt's schema names"
        ) from None


def _with_schema(prompt: str, schema: dict[str, Any] | None) -> str:
    return f"{prompt}\n\n{json_instruction(schema)}" if schema is not None else prompt


def _step_output(mc: MixinContext, used_fallback: bool) -> dict[str, Any] | None:
    output: dict[str, Any] = {}
    if mc.schema is not None:
        output |= {"data": mc.data, "fallback": used_fallback}
    if mc.tool_calls:
        output["tool_calls"] = mc.tool_calls
    if mc.extras:
        output["mixins"] = mc.extras
    return output or None


def _default_system_prompt(agent: AgentType) -> str:
    description = f" {agent.description}" if agent.description else ""
    return f"You are {agent.name}, a {agent.role} agent in a team of AI agents.{description}"


def _model_settings(config: AgentConfig) -> ModelSettings:
    model_settings: ModelSettings = {}
    if config.model_config_obj is not None:
        model_settings.update(
            cast("ModelSettings", config.model_config_obj.default_settings)
        )  # registry entries' settings
    if config.temperature is not None:
        model_settings["temperature"] = config.temperature
    if config.max_tokens is not None:
        model_settings["max_tokens"] = config.max_tokens
    return model_settings
