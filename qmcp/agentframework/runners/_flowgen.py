"""The source of a Metaflow flow for a topology: readable, formatted as ruff formats it, one step per call.

The flow's steps call `metaflow_helpers`, which run the topology's own code; this module only
lays out the DAG from the topology's `step_plan` (a chain of calls, a `foreach` and its join),
naming each step's agent call by the key the plan gives it, which the topology's `run()` builds
with the same key builders. A topology without a plan runs in one step.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import InvalidConfigError
from ..models import check_name
from ..topologies import AgentCall, ParallelCalls, StepPlan
from ._config import RunConfig
from ._team import Team

__all__ = [
    "LAUNCH_VARIABLE",
    "flow_class_name",
    "flow_digest",
    "flow_file_name",
    "flow_identifier",
    "generate_flow",
    "launch_value",
    "metaflow_retries",
]

LAUNCH_VARIABLE = "QMCP_FLOW_LAUNCH"
"""Set by `MetaflowRunner` for the flow it launches: the execution's id, its topology's id (`-` for none)
and the SHA-256 of the flow file's source (`flow_digest`), separated by spaces (`launch_value`). A `start` step of that very file, for that execution,
then imports no qmcp code: the runner made and checked the execution, holds its lease and tagged the run."""

_LINE_LENGTH = 110
_HELPERS = "qmcp.agentframework.runners.metaflow_helpers"
_ARTIFACTS = frozenset(
    {
        "input_json",
        "given_execution_id",
        "execution_id",
        "topology_id",
        "result",
        "output",
        "answer",
        "usage",
        "step_usage",
        "completed",
    }
)
_EXECUTION = "execution_id=self.execution_id"
_STEP_USAGE = 'self.step_usage = self.result["usage"]'


_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*$")
"""Names whose CamelCase spelling gives them back: `ai_debate` ↔ `AiDebate`."""


def _disambiguator(topology_name: str) -> str | None:
    """None for a snake_case name; else 12 hex digits of its SHA-256, appended to its flow's names.

    Topology names may hold '-', '__', a trailing '_' or a word that starts with a digit, and then
    two names share one spelling (`inj-pipe` and `inj_pipe` both read `InjPipe`, `a_2b` and `a2b`
    both `A2b`). Exactly the snake_case ones keep the plain spelling; the others get the digest,
    after a separator no snake_case spelling contains ('__' in the file name, '_' in the class
    name), so no flow file or Metaflow flow name ever belongs to two topologies.
    """
    if _SNAKE_CASE.fullmatch(topology_name):
        return None
    return hashlib.sha256(topology_name.encode()).hexdigest()[:12]


def flow_identifier(topology_name: str) -> str:
    """The Python identifier a flow's file and class names are made of: a topology name with '-' as '_'.

    Anything but a valid topology name (lowercase letters, digits, '_' and '-', starting with a
    letter) is refused, so a flow's file can only ever be a plain file in the directory it is
    written to, and its class a plain identifier.
    """
    try:
        check_name(topology_name, "topology")
    except ValueError as error:
        raise InvalidConfigError(f"no Metaflow flow for this topology: {error}") from None
    return topology_name.replace("-", "_")


def flow_class_name(topology_name: str) -> str:
    """`ai_debate` → `AiDebateFlow`; `inj-pipe` → `InjPipe_<digest>Flow` (see `_disambiguator`)."""
    words = flow_identifier(topology_name).split("_")
    camel = "".join(word[:1].upper() + word[1:] for word in words)
    digest = _disambiguator(topology_name)
    return f"{camel}_{digest}Flow" if digest else f"{camel}Flow"


def flow_file_name(topology_name: str) -> str:
    """`ai_debate` → `ai_debate_flow.py`; `inj-pipe` → `inj_pipe__<digest>_flow.py` (see `_disambiguator`)."""
    stem = flow_identifier(topology_name)
    digest = _disambiguator(topology_name)
    return f"{stem}__{digest}_flow.py" if digest else f"{stem}_flow.py"


@dataclass(frozen=True)
class _Step:
    name: str
    doc: str
    helpers: tuple[str, ...]
    body: list[str]
    join: bool = False
    comment: tuple[str, ...] = ()
    lazy: bool = False
    """The body imports its helpers where it needs them (`start`, `end`: not in a run the runner launched)."""


def generate_flow(team: Team, config: RunConfig) -> str:
    """The flow file for a validated team; `config` sets the steps' `@retry` and `@timeout`."""
    topology = team.topology
    plan = team.implementation.step_plan(team.agents)
    if plan is None:
        summary, steps = "one step runs the whole topology", _whole(team)
    else:
        summary, steps = plan.summary, _planned(team, plan)
    kind_name = str(topology.topology_type)
    file_name = flow_file_name(topology.name)
    lines = [
        f'"""Metaflow flow of the qmcp {kind_name} topology {topology.name!r}. Generated by qmcp: regenerate, do not edit.',
        "",
        "Run it (QMCP_DATABASE_URL names qmcp's database; QMCP_MODEL_OVERRIDE=test runs it offline):",
        "",
        f'    python {file_name} run --input-json \'{{"prompt": "..."}}\'',
        f"    python {file_name} resume",
        "",
        "On Kubernetes or AWS Batch add `--with kubernetes` or `--with batch`, with QMCP_DATABASE_URL on PostgreSQL.",
        f"Each step runs qmcp's own {kind_name} code up to the agent call it owns; the calls of earlier steps",
        "replay from qmcp's step store, so prompts, step keys and output are those of every qmcp runner.",
        '"""',
        "",
        "import contextlib",
        "import gc",
        "import getpass",
        "import hashlib",
        "import json",
        "import os",
        "",
        "from metaflow import FlowSpec, JSONType, Parameter, current, retry, step, timeout"
        if config.retry_on_failure
        else "from metaflow import FlowSpec, JSONType, Parameter, current, step, timeout",
        "",
        "# Metaflow names a run's user (and so the default namespace it is seen in, `user:NAME`) after",
        "# METAFLOW_USER, SUDO_USER, USERNAME or USER, ignoring root, and refuses to run without one. Where none is",
        "# set (a service, a container), the account's name stands in; for root, which Metaflow never takes, `qmcp`.",
        '_USER_VARIABLES = ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")',
        'if all(os.environ.get(name) in (None, "", "root") for name in _USER_VARIABLES):',
        "    try:",
        "        account = getpass.getuser()",
        "    except (KeyError, OSError):  # a uid without an account, as in some containers",
        '        account = "root"',
        '    os.environ["USERNAME"] = account if account != "root" else "qmcp"',
        "",
        *_constant("TOPOLOGY", _without_defaults(topology.definition(), topology.parsed_config)),
        *_constant(
            "AGENTS",
            {
                slot: _without_defaults(agent.definition(), agent.agent_config)
                for slot, agent in team.agents.items()
            },
        ),
        *_constant("RUN_CONFIG", config.model_dump(mode="json", exclude_defaults=True)),
        "",
        "",
        *_LAUNCHED_BY_RUNNER,
        "",
        "",
        *_LOADING_QMCP,
        "",
        "",
        f"class {flow_class_name(topology.name)}(FlowSpec):",
        f'    """{kind_name.capitalize()} {topology.name!r}: {summary}."""',
        "",
        "    input_json = Parameter(",
        '        "input-json", type=JSONType, default="{}", help="The topology\'s input, a JSON object."',
        "    )",
        "    given_execution_id = Parameter(",
        '        "execution-id", default="", help="The qmcp execution to run; a new one when empty."',
        "    )",
    ]
    decorators = _decorators(config)
    for step in steps:
        lines += ["", *_render(step, [] if step.name == "start" else decorators)]
    lines += ["", "", 'if __name__ == "__main__":', f"    {flow_class_name(topology.name)}()", ""]
    return "\n".join(lines)


def flow_digest(source: str) -> str:
    """The SHA-256 of a flow file's source, as its `start` step computes it (see `LAUNCH_VARIABLE`)."""
    return hashlib.sha256(source.encode()).hexdigest()


def launch_value(execution_id: object, topology_id: int | None, digest: str) -> str:
    """`LAUNCH_VARIABLE`'s value: no commas or quotes, which Metaflow's `--with environment:vars=` would split."""
    return f"{execution_id} {'-' if topology_id is None else topology_id} {digest}"


_LAUNCHED_BY_RUNNER = (
    "def _launched_by_runner(execution_id):",
    '    """(execution id, topology id) when MetaflowRunner launched this run of `execution_id` from this very',
    "    file: the runner made and checked the execution, holds its lease and tagged the run, so `start` has",
    '    nothing to check and imports no qmcp code. None otherwise (a run started by hand, another file)."""',
    f'    launch = os.environ.get("{LAUNCH_VARIABLE}", "").split()  # execution, topology, SHA-256 of this file',
    "    if not execution_id or len(launch) != 3 or launch[0] != execution_id:",
    "        return None",
    '    with open(__file__, "rb") as source:',
    "        if hashlib.sha256(source.read()).hexdigest() != launch[2]:",
    "            return None",
    '    return execution_id, None if launch[1] == "-" else int(launch[1])',
)


_LOADING_QMCP = (
    "@contextlib.contextmanager",
    "def _loading_qmcp():",
    '    """Import qmcp in a task of this flow (a process that ends with its step) with the garbage collector',
    "    paused, then freeze what the import made: its ~1,000 modules live until the task exits, and the",
    '    collector would otherwise scan them again in every full collection (docs/metaflow.md)."""',
    "    enabled = gc.isenabled()",
    "    gc.disable()",
    "    try:",
    "        yield",
    "    finally:",
    "        gc.freeze()",
    "        if enabled:",
    "            gc.enable()",
)
"""The steps that record (agent steps, the join) import qmcp under it; `start` and `end` mostly import none."""


# -- shapes: derived from the topology's step plan ---------------------------------------------------


def _planned(team: Team, plan: StepPlan) -> list[_Step]:
    """A step per sequential call, a `foreach` and its join for parallel calls, then the end."""
    calls = [stage for stage in plan.stages if isinstance(stage, AgentCall)]
    parallel = plan.stages[-1] if isinstance(plan.stages[-1], ParallelCalls) else None
    joined = (parallel.step, parallel.join, f"{parallel.step}_calls") if parallel else ()
    names = _stage_names([call.step or call.slot for call in calls], reserved=joined)
    following = [*names, parallel.step if parallel else "end"]
    steps = [_start(_next(following[0], parallel if not calls else None))]
    kind = str(team.topology.topology_type)
    for index, (call, name) in enumerate(zip(calls, names, strict=True)):
        last = index + 1 == len(calls)
        finishes = last and parallel is None  # the last call of a chain also completes the execution
        steps.append(
            _Step(
                name,
                call.doc or f"Agent {team.agents[call.slot].name!r} in slot {call.slot!r}.",
                ("invoke_agent", *_FINISH_HELPERS, "run_topology") if finishes else ("invoke_agent",),
                [
                    *_call("self.result", "invoke_agent", [_agent(call.slot), _key(call.key), _EXECUTION]),
                    _STEP_USAGE,
                    *(
                        _replay_and_finish(
                            f"# The {kind}'s last call: complete the execution with its output."
                        )
                        if finishes
                        else []
                    ),
                    *_next(following[index + 1], parallel if last else None),
                ],
            )
        )
    if parallel is None:
        return [*steps, _end()]
    completes = not parallel.join_owns  # the last call lets the code run to its end: that member completes
    member = (
        _prepared_member(parallel, first=not calls)
        if completes
        else _Step(
            parallel.step,
            parallel.doc,
            ("invoke_agent",),
            ["slot, key = self.input", *_invoke(8), _STEP_USAGE, f"self.next(self.{parallel.join})"],
        )
    )
    return [
        *steps,
        member,
        _join(parallel, kind) if completes else _join_running_the_code(parallel, kind),
        _end(),
    ]


_FLOWCALL = "qmcp.agentframework.flowcall"


def _invoke(indent: int) -> list[str]:
    return _call("self.result", "invoke_agent", ["AGENTS[slot]", "key=key", _EXECUTION], indent)


def _prepared_member(parallel: ParallelCalls, *, first: bool) -> _Step:
    """A `foreach` step whose last call lets the topology's code run to its end. Its call may have been
    prepared by the runner (the flow's first stage, launched locally on SQLite): the task then makes
    and records it without qmcp's topology code or store (`flowcall`), and the runner completes the
    execution. Otherwise the task runs the code, and the call recorded last completes the execution."""
    indent = 12 if first else 8  # the code's, in the step's body
    general = [
        "with _loading_qmcp():",
        *(line[indent:] for line in _import(["complete_when_done", "invoke_agent"], indent + 4)),
        "",
        *_invoke(indent),
        "# The call recorded last lets the topology's code run to its end: it completes the execution.",
        "self.completed = complete_when_done(self.topology_id, self.execution_id)",
    ]
    body = ["slot, key = self.input"]
    if first:
        body += [
            "# A call MetaflowRunner prepared is made and recorded without qmcp's topology code or store.",
            "with _loading_qmcp():",
            f"    from {_FLOWCALL} import call_prepared",
            "",
            "self.result, self.completed = call_prepared(self.execution_id, key), None",
            "if self.result is None:  # not prepared (a run by hand, a resume, a retry): the topology's code",
            *(f"    {line}" if line else "" for line in general),
        ]
    else:
        body += general
    return _Step(
        parallel.step,
        parallel.doc,
        ("complete_when_done", "invoke_agent"),
        [*body, _STEP_USAGE, f"self.next(self.{parallel.join})"],
        lazy=True,
    )


def _join_code(parallel: ParallelCalls, indent: int) -> list[str]:
    """The join's call of the topology's code, to its end, then the end's artifacts."""
    owns = [f"owns=[{', '.join(_quote(key) for key in parallel.join_owns)}]"] if parallel.join_owns else []
    after = f"after=[{parallel.step}.result for {parallel.step} in inputs]"
    call = _call("self.output, self.step_usage", "run_topology", ["self.execution_id", *owns, after], indent)
    return [*call, *_finish(indent)]


_MERGE = 'self.merge_artifacts(inputs, include=["execution_id", "topology_id"])'


def _join_running_the_code(parallel: ParallelCalls, kind: str) -> _Step:
    """A join that makes calls of its own (`join_owns`): it runs the topology's code to its end."""
    return _Step(
        parallel.join,
        parallel.join_doc,
        ("run_topology", *_FINISH_HELPERS),
        [_MERGE, *_join_code(parallel, 8), "self.next(self.end)"],
        join=True,
        comment=(f"# Runs the {kind}'s code to its end, then completes the execution with its output.",),
    )


def _join(parallel: ParallelCalls, kind: str) -> _Step:
    """A join that makes no call: a member or the runner completed the execution (it imports no qmcp but
    `flowcall`'s reading of it), unless a call failed (which the topology may tolerate) or came from the
    run a resumed run resumes."""
    member = parallel.step
    return _Step(
        parallel.join,
        parallel.join_doc,
        ("run_topology", *_FINISH_HELPERS),
        [
            _MERGE,
            f"from {_FLOWCALL} import ended_execution",
            "",
            f"completed = [{member}.completed for {member} in inputs if {member}.completed]",
            f"results = [{member}.result for {member} in inputs]",
            "ended = completed[0] if completed else ended_execution(self.execution_id, results)",
            "if ended is not None:  # a member or the runner completed the execution: nothing is left to record",
            '    self.output, self.answer, self.usage = ended["output"], ended["answer"], ended["usage"]',
            "    self.step_usage = {name: 0 for name in self.usage}",
            "else:  # a call failed (the topology may tolerate it), or a resumed run: run the code to its end",
            "    with _loading_qmcp():",
            *(line[8:] for line in _import(sorted(("run_topology", *_FINISH_HELPERS)), 16)),
            "",
            *(f"    {line}" if line else "" for line in _join_code(parallel, 12)),
            "self.next(self.end)",
        ],
        join=True,
        comment=(
            f"# The {kind}'s output: from the step that completed the execution, else its code run to its end.",
        ),
        lazy=True,
    )


def _next(target: str, parallel: ParallelCalls | None) -> list[str]:
    """`self.next(...)`; into parallel calls, a `foreach` over their (slot, key) pairs."""
    if parallel is None:
        return [f"self.next(self.{target})"]
    items = f"{parallel.step}_calls"
    return [
        *_list(f"self.{items}", [f"[{_quote(c.slot)}, {_quote(c.key)}]" for c in parallel.calls]),
        f'self.next(self.{target}, foreach="{items}")',
    ]


def _whole(team: Team) -> list[_Step]:
    kind = str(team.topology.topology_type)
    reason = team.implementation.shape_note
    return [
        _start(["self.next(self.topology)"]),
        _Step(
            "topology",
            f"Runs the whole {kind} topology; each of its agent calls is a durable qmcp step.",
            ("run_topology", *_FINISH_HELPERS),
            [
                *_call("self.output, self.step_usage", "run_topology", ["self.execution_id", 'owns="all"']),
                *_finish(),
                "self.next(self.end)",
            ],
            comment=(
                f"# A {kind} topology has no fixed shape ({reason}), so this one step runs it through",
                "# qmcp's own topology code; resuming replays its finished agent calls from the step store.",
            ),
        ),
        _end(),
    ]


# -- common steps -------------------------------------------------------------------------------------


def _start(tail: list[str]) -> _Step:
    return _Step(
        "start",
        "Creates the qmcp execution, or attaches to the one given by --execution-id.",
        ("start_execution",),
        [
            "launched = _launched_by_runner(self.given_execution_id)",
            "if launched is not None:",
            "    self.execution_id, self.topology_id = launched",
            "else:",
            f"    from {_HELPERS} import start_execution",
            "",
            *(
                f"    {line}"
                for line in _call(
                    "self.execution_id, self.topology_id",
                    "start_execution",
                    [
                        "TOPOLOGY",
                        "AGENTS",
                        "self.input_json",
                        "self.given_execution_id",
                        "run_config=RUN_CONFIG",
                    ],
                    indent=12,
                )
            ),
            *tail,
        ],
        lazy=True,
    )


def _end() -> _Step:
    """The end: the step before it completed the execution, so this one imports qmcp only in a resumed run
    (to tag that run with the execution, as every run that works on it is)."""
    return _Step(
        "end",
        "Ends the run: the step before it completed the execution.",
        ("save_execution",),
        [
            "self.step_usage = {name: 0 for name in self.step_usage}  # end makes no agent call",
            "if current.origin_run_id:  # a resumed run: tag it with the execution (a finished one is left as is)",
            f"    from {_HELPERS} import save_execution",
            "",
            *(f"    {line}" for line in _call("self.usage", "save_execution", _SAVE_ARGS, indent=12)),
        ],
        lazy=True,
    )


_FINISH_HELPERS = ("output_text", "save_execution")
_SAVE_ARGS = ["self.topology_id", "self.output", _EXECUTION]


def _finish(indent: int = 8) -> list[str]:
    """The end's artifacts: the run's `answer` (its output's main text) and `usage` (what it used in all)."""
    return [
        "self.answer = output_text(self.output)",
        *_call("self.usage", "save_execution", _SAVE_ARGS, indent),
    ]


def _replay_and_finish(comment: str) -> list[str]:
    """The last call of a chain: the topology's output, replayed from the store, completes the execution."""
    return [comment, "self.output, _ = run_topology(self.execution_id)", *_finish()]


def metaflow_retries(config: RunConfig) -> int:
    """How many times `@retry` runs a failed task of the flow again (the steps read it too: a task that
    will be retried leaves the execution running). Metaflow allows at most MAX_ATTEMPTS - 2."""
    from metaflow.metaflow_config import MAX_ATTEMPTS

    return min(config.max_retries, MAX_ATTEMPTS - 2) if config.retry_on_failure else 0


def _decorators(config: RunConfig) -> list[str]:
    """`@retry` and `@timeout` as the run config asks; `start` gets none (a retry would make a second execution)."""
    lines = []
    if config.retry_on_failure:
        # Model errors are also retried inside the step; a permanent one ends the task without a retry.
        lines.append(
            f"    @retry(times={metaflow_retries(config)}, "
            f"minutes_between_retries={round(config.retry_backoff_seconds / 60)})"
        )
    return [*lines, f"    @timeout(seconds={config.timeout_seconds})"]


def _render(step: _Step, decorators: list[str]) -> list[str]:
    return [
        *decorators,
        "    @step",
        f"    def {step.name}(self, inputs):" if step.join else f"    def {step.name}(self):",
        f'        """{step.doc}"""',
        *(f"        {line}" for line in step.comment),
        *([] if step.lazy else ["        with _loading_qmcp():", *_import(sorted(step.helpers), 12), ""]),
        *(f"        {line}" if line else "" for line in step.body),
    ]


# -- formatting ---------------------------------------------------------------------------------------


def _import(names: Sequence[str], indent: int = 8) -> list[str]:
    """`from HELPERS import names` in a step body, wrapped one name a line as ruff does when too long."""
    pad = " " * indent
    line = f"{pad}from {_HELPERS} import {', '.join(names)}"
    if len(line) <= _LINE_LENGTH:
        return [line]
    return [f"{pad}from {_HELPERS} import (", *(f"{pad}    {name}," for name in names), f"{pad})"]


_IMPORTED = (
    "contextlib",
    "gc",
    "hashlib",
    "json",
    "FlowSpec",
    "JSONType",
    "Parameter",
    "current",
    "retry",
    "step",
    "timeout",
)
"""The names a flow file imports: decorators are looked up in the class body, where a step method
of the same name (`step`, `retry`, `timeout`) would shadow them."""
_METAFLOW_RESERVED = ("name", "next", "input", "index", "cmd", "foreach", "inputs")
"""Step names Metaflow's linter refuses, and names its API uses for step arguments."""


def _stage_names(stages: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    """A step name per stage: the slot, unless Metaflow, Python or the flow's own names (`reserved`: its
    parallel step, join and their artifact) use it.

    Such a slot becomes `stage_<n>_<slot>`; should that be taken too (another slot is named so),
    `_` is appended until it is free.
    """
    from metaflow import FlowSpec

    taken = {
        *dir(FlowSpec),
        *keyword.kwlist,
        *keyword.softkwlist,
        "start",
        "end",
        *_ARTIFACTS,
        *_IMPORTED,
        *_METAFLOW_RESERVED,
        *reserved,
    }
    names: list[str] = []
    for index, stage in enumerate(stages):
        name = stage.replace("-", "_")
        if name in taken or name in names:
            name = f"stage_{index + 1}_{name}"
        while name in taken or name in names:
            name += "_"
        names.append(name)
    return names


def _without_defaults(definition: dict[str, Any], config: BaseModel) -> dict[str, Any]:
    """A definition with only what differs from the defaults: what a reader needs, and the same once validated."""
    compact = {name: value for name, value in definition.items() if value != ""}
    return compact | {"config": config.model_dump(mode="json", exclude_defaults=True)}


def _constant(name: str, value: dict[str, Any]) -> list[str]:
    # JSON escapes every quote and control character, so a raw triple-quoted string holds it as is.
    return [f"{name} = json.loads(", '    r"""', _json(value), '"""', ")"]


def _json(value: dict[str, Any]) -> str:
    """One line per top-level entry: an agent, a config field."""
    if not value:
        return "{}"
    entries = ",\n".join(f"    {json.dumps(key)}: {json.dumps(item)}" for key, item in value.items())
    return f"{{\n{entries}\n}}"


def _quote(text: str) -> str:
    return json.dumps(text)


def _agent(slot: str) -> str:
    return f"AGENTS[{_quote(slot)}]"


def _key(key: str) -> str:
    return f"key={_quote(key)}"


def _call(target: str, function: str, args: Sequence[str], indent: int = 8) -> list[str]:
    """`target = function(args)` split the way ruff format splits it (body indentation: `indent` spaces)."""
    head = f"{target} = {function}(" if target else f"{function}("
    return _bracketed(head, list(args), ")", indent)


def _list(target: str, items: Sequence[str]) -> list[str]:
    return _bracketed(f"{target} = [", list(items), "]")


def _bracketed(head: str, items: list[str], close: str, indent: int = 8) -> list[str]:
    one_line = f"{head}{', '.join(items)}{close}"
    if indent + len(one_line) <= _LINE_LENGTH:
        return [one_line]
    hugged = "    " + ", ".join(items)
    nested = any(item.startswith("[") for item in items)  # ruff puts bracketed items one per line
    if indent + len(hugged) <= _LINE_LENGTH and not nested:
        return [head, hugged, close]
    return [head, *(f"    {item}," for item in items), close]
