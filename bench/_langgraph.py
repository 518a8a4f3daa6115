"""The same workloads on LangGraph: a `StateGraph` per topology, checkpointed by `AsyncSqliteSaver`.

Equivalences with qmcp, so the ratios compare like with like:
* every node calls `model_call`, a plain async function with the scripted model's latency and reply;
* the durable variants run with `durability="sync"`, so each step's checkpoint is committed before
  the next step starts, as qmcp's step row is, and the saver's connection uses
  `synchronous=NORMAL`, as qmcp's SQLite engine does (both survive a killed process);
* the pipeline is one node looping over the stages, with the task, the previous output and the
  stage index as state (earlier outputs stay in the checkpoint history): the cheapest LangGraph
  form of a long pipeline;
* graphs are compiled once in `setup`, outside the timed runs; qmcp's timed `run()` includes
  validating and storing the team.
"""

from __future__ import annotations

import contextlib
import operator
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from ._common import TASK, Case, Metrics, ideal_ensemble_seconds, model_call, stage_prompt, timed

__all__ = ["make_case"]


class PipelineState(TypedDict):
    task: str
    previous: str | None
    index: int


class EnsembleState(TypedDict):
    task: str
    answers: Annotated[list[str], operator.add]
    answer: str


class MemberInput(TypedDict):
    task: str
    member: int


class ProviderError(Exception):
    """The scripted 401 of the resume workload."""


class _Probe:
    """Counts node executions; the nodes in `fail_once` raise on their first execution."""

    def __init__(self, fail_once: set[int]) -> None:
        self.calls, self.fail_once = 0, fail_once

    def enter(self, index: int) -> None:
        self.calls += 1
        if index in self.fail_once:
            self.fail_once.discard(index)
            raise ProviderError("scripted 401")


class _Saver:
    """One `AsyncSqliteSaver` on a file in the work directory, WAL and synchronous=NORMAL."""

    def __init__(self, workdir: Path, store: str) -> None:
        self.path, self.store = workdir / "langgraph.db", store
        self._stack = contextlib.AsyncExitStack()
        self.saver: AsyncSqliteSaver | None = None

    async def open(self) -> AsyncSqliteSaver | None:
        if self.store == "memory":
            return None
        self.saver = await self._stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(self.path)))
        await self.saver.setup()
        await self.saver.conn.execute("PRAGMA synchronous=NORMAL")
        return self.saver

    async def close(self) -> None:
        await self._stack.aclose()


def _config(limit: int, **extra: Any) -> RunnableConfig:
    """A new thread per run; `extra` holds e.g. `max_concurrency`."""
    return cast(
        RunnableConfig, {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": limit, **extra}
    )


def _pipeline_graph(steps: int, probe: _Probe | None = None) -> StateGraph:
    """`steps` zero-latency stages, each prompt built from the previous output.

    One node looping `steps` times: a chain of `steps` distinct nodes checkpoints every node's
    version on every step, which makes LangGraph quadratic (16 ms a step at 5,000 steps here).
    """

    async def stage(state: PipelineState) -> dict[str, Any]:
        index = state["index"]
        if probe is not None:
            probe.enter(index)
        prompt = stage_prompt(state["task"], index, steps, state["previous"])
        return {"previous": await model_call(prompt, 0.0), "index": index + 1}

    def next_stage(state: PipelineState) -> str:
        return "stage" if state["index"] < steps else END

    graph = StateGraph(PipelineState)
    graph.add_node("stage", stage)
    graph.add_edge(START, "stage")
    graph.add_conditional_edges("stage", next_stage, ["stage", END])
    return graph


class Pipeline:
    def __init__(self, workdir: Path, store: str, steps: int) -> None:
        self.steps, self.store = steps, store
        self.saver = _Saver(workdir, store)

    async def setup(self) -> None:
        self.graph = _pipeline_graph(self.steps).compile(checkpointer=await self.saver.open())

    async def run(self) -> Metrics:
        durability: Literal["sync"] | None = "sync" if self.store != "memory" else None
        _, seconds = await timed(
            lambda: self.graph.ainvoke(
                PipelineState(task=TASK, previous=None, index=0),
                _config(self.steps + 10),
                durability=durability,
            )
        )
        return {"seconds": seconds, "per_step_ms": seconds / self.steps * 1000}

    async def close(self) -> None:
        await self.saver.close()


class Scaling:
    def __init__(self, workdir: Path, steps: int, reference_steps: int) -> None:
        self.saver = _Saver(workdir, "sqlite")
        self.long = Pipeline(workdir, "sqlite", steps)
        self.short = Pipeline(workdir, "sqlite", reference_steps)

    async def setup(self) -> None:
        saver = await self.saver.open()
        for pipeline in (self.long, self.short):
            pipeline.graph = _pipeline_graph(pipeline.steps).compile(checkpointer=saver)

    async def run(self) -> Metrics:
        reference = await self.short.run()
        metrics = await self.long.run()
        return {
            **metrics,
            "reference_per_step_ms": reference["per_step_ms"],
            "flatness": metrics["per_step_ms"] / reference["per_step_ms"],
        }

    async def close(self) -> None:
        await self.saver.close()


class Ensemble:
    """Fan out with `Send` to `members` member tasks (max_concurrency), then one aggregator node."""

    def __init__(self, workdir: Path, members: int, max_concurrent: int, latency: float) -> None:
        self.members, self.max_concurrent, self.latency = members, max_concurrent, latency
        self.saver = _Saver(workdir, "sqlite")

    async def setup(self) -> None:
        latency, members = self.latency, self.members

        def fan_out(state: EnsembleState) -> list[Send]:
            return [Send("member", {"task": state["task"], "member": i}) for i in range(members)]

        async def member(state: MemberInput) -> dict[str, Any]:
            prompt = f"Task: {state['task']}\n\nAnswer the task on your own (member m{state['member']})."
            return {"answers": [await model_call(prompt, latency)]}

        async def aggregate(state: EnsembleState) -> dict[str, Any]:
            answers = "\n\n".join(f"[{i}] {a}" for i, a in enumerate(state["answers"]))
            prompt = f"Task: {state['task']}\n\nAnswers:\n{answers}\n\nWrite one answer from all of them."
            return {"answer": await model_call(prompt, latency)}

        graph = StateGraph(EnsembleState)
        graph.add_node("member", member)
        graph.add_node("aggregate", aggregate)
        graph.add_conditional_edges(START, fan_out, ["member"])
        graph.add_edge("member", "aggregate")
        graph.add_edge("aggregate", END)
        self.graph = graph.compile(checkpointer=await self.saver.open())

    async def run(self) -> Metrics:
        config = _config(100, max_concurrency=self.max_concurrent)
        state, seconds = await timed(
            lambda: self.graph.ainvoke(
                EnsembleState(task=TASK, answers=[], answer=""), config, durability="sync"
            )
        )
        if len(state["answers"]) != self.members:
            raise RuntimeError(f"expected {self.members} answers, got {len(state['answers'])}")
        ideal = ideal_ensemble_seconds(self.members, self.max_concurrent, self.latency)
        return {"seconds": seconds, "efficiency": ideal / seconds}

    async def close(self) -> None:
        await self.saver.close()


class Resume:
    """Node `fail_at` raises once; the run fails, `ainvoke(None)` on the same thread resumes it."""

    def __init__(self, workdir: Path, steps: int, fail_at: int) -> None:
        self.steps, self.fail_at = steps, fail_at
        self.saver = _Saver(workdir, "sqlite")

    async def setup(self) -> None:
        self.checkpointer = await self.saver.open()

    async def run(self) -> Metrics:
        probe = _Probe({self.fail_at - 1})
        graph = _pipeline_graph(self.steps, probe).compile(checkpointer=self.checkpointer)
        config = _config(self.steps + 10)

        async def fail_then_resume() -> dict[str, Any]:
            try:
                await graph.ainvoke(
                    PipelineState(task=TASK, previous=None, index=0), config, durability="sync"
                )
            except ProviderError:
                pass
            else:
                raise RuntimeError("the first attempt should fail")
            return await graph.ainvoke(None, config, durability="sync")

        _, seconds = await timed(fail_then_resume)
        return {"seconds": seconds, "step_executions": probe.calls}

    async def close(self) -> None:
        await self.saver.close()


def make_case(workload: str, variant: str, workdir: Path, params: dict[str, Any]) -> Case:
    """The LangGraph case of `workload` in `variant`."""
    if workload == "pipeline_overhead":
        return Pipeline(workdir, variant, params["steps"])
    if workload == "pipeline_scaling":
        return Scaling(workdir, params["steps"], params["reference_steps"])
    if workload in ("ensemble_concurrency", "ensemble_scale"):
        return Ensemble(workdir, params["members"], params["max_concurrent"], params["latency"])
    if workload == "resume_cost":
        return Resume(workdir, params["steps"], params["fail_at"])
    raise LookupError(f"no LangGraph case for {workload}/{variant}")
