"""first_call: from starting Python to the first model call, in a fresh process per sample.

What a user waits for on the first run of a program: the interpreter, the framework's imports, the
team (or graph) built, the database opened (a new file, or one made before) and the first step's
model call. Each framework's script runs one single-step durable team on SQLite; its model (qmcp's
`ScriptedModel`, LangGraph's node function) prints the wall clock at its first call, and the time
from just before the process was started to that moment is measured.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from ._common import TASK, Metrics

__all__ = ["make_case"]

_MARK = "first-call "

_QMCP = """
import asyncio, sys, time
from qmcp import AgentConfig, AgentType, LocalRunner, Topology
from qmcp.agentframework.llm import ScriptedModel, register_model

def reply(prompt, index):
    if index == 0:
        print(%(mark)r + repr(time.time()), flush=True)
    return f"reply to {len(prompt)} chars"

register_model("scripted:first", ScriptedModel(name="scripted:first", replies=reply).model)
agents = {"s0": AgentType(name="stage", config=AgentConfig(model="scripted:first").model_dump())}
topology = Topology(name="first_call", topology_type="pipeline")
result = asyncio.run(LocalRunner(db_url=sys.argv[1]).run(topology, agents, {"prompt": %(task)r}))
assert result.status == "completed", result.error
"""

_LANGGRAPH = """
import asyncio, sys, time, uuid
from typing import TypedDict
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

class State(TypedDict):
    task: str
    answer: str

calls = 0

async def stage(state):
    global calls
    if calls == 0:
        print(%(mark)r + repr(time.time()), flush=True)
    calls += 1
    return {"answer": f"reply to {len(state['task'])} chars"}

async def main():
    async with AsyncSqliteSaver.from_conn_string(sys.argv[1]) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        graph = StateGraph(State)
        graph.add_node("stage", stage)
        graph.add_edge(START, "stage")
        graph.add_edge("stage", END)
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        await app.ainvoke({"task": %(task)r, "answer": ""}, config, durability="sync")

asyncio.run(main())
"""


class FirstCall:
    """One process per run; `new_database` gives each its own new file, `existing_database` one made before."""

    def __init__(self, framework: str, variant: str, workdir: Path) -> None:
        script = {"qmcp": _QMCP, "langgraph": _LANGGRAPH}[framework]
        self.code = script % {"mark": _MARK, "task": TASK}
        self.framework, self.variant, self.workdir = framework, variant, workdir

    async def setup(self) -> None:
        pass

    def _database(self) -> str:
        name = f"first-{uuid.uuid4().hex[:8]}.db" if self.variant == "new_database" else "first.db"
        path = self.workdir / name
        return f"sqlite+aiosqlite:///{path}" if self.framework == "qmcp" else str(path)

    async def run(self) -> Metrics:
        database = self._database()
        started = time.time()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            self.code,
            database,
            env=os.environ.copy(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
        ended = time.time()
        if process.returncode != 0:
            raise RuntimeError(
                f"the {self.framework} script exited {process.returncode}: {stderr.decode()[-800:]}"
            )
        marks = [line for line in stdout.decode().splitlines() if line.startswith(_MARK)]
        if not marks:
            raise RuntimeError(f"the {self.framework} script made no model call")
        first = float(marks[0][len(_MARK) :])
        return {"seconds": first - started, "exit_seconds": ended - started}

    async def close(self) -> None:
        pass


def make_case(framework: str, variant: str, workdir: Path) -> FirstCall:
    return FirstCall(framework, variant, workdir)
