"""Bad input, fuzzed with hypothesis: topology configs, agent definitions, input JSON and `apply` files.

Deep nesting, huge strings, wrong types and odd unicode must always end in a clear validation
error (`UserInputError`; exit code 2 with one `error:` line for `qmcp apply`) or a normal run,
never another exception, and a rejected input must leave the database exactly as it was.
Examples are derandomized, so the suite is the same on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qmcp.agentframework.errors import UserInputError
from qmcp.agentframework.models import AgentRole, TopologyType
from qmcp.agentframework.runners import LocalRunner, RunResult

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# -- strategies ---------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "\n\t", "é", "😀", "\u202e", "a" * 65, "DROP TABLE agent_types;--"]
)
TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | ODD_TEXT  # includes lone surrogates
HUGE = st.integers(100_000, 2_000_000).map(lambda n: "x" * n)
NUMBERS = st.integers() | st.floats() | st.sampled_from([0, -1, 2**63, 10**400, float("nan"), float("inf")])
NOT_JSON = (
    st.binary(max_size=8) | st.sets(st.integers(), max_size=3) | st.complex_numbers() | st.builds(object)
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT


class Nested(list[Any]):
    """A deeply nested value whose repr stays short (hypothesis prints failing examples)."""

    depth: int = 0

    def __repr__(self) -> str:
        return f"Nested(depth={self.depth})"

    @classmethod
    def of(cls, depth: int) -> Nested:
        value: Any = "bottom"
        for level in range(depth - 1):
            value = {"n": value} if level % 2 else [value]
        nested = cls([value])
        nested.depth = depth
        return nested


# Depths just under the recursion limit are the subject of `test_input_nested_just_under_the_limit`;
# here they would make the outcome depend on the stack depth of the moment (a flaky example).
DEEP = (st.integers(50, 300) | st.integers(2_000, 5_000)).map(Nested.of)
VALUES = (
    st.recursive(
        SCALARS | NOT_JSON,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(TEXT | st.integers(), children, max_size=4)
        ),
        max_leaves=12,
    )
    | DEEP
    | HUGE
)


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` about four times in five, so single bad fields get through to the deeper checks."""
    return st.integers(0, 4).flatmap(lambda i: invalid if i == 4 else valid)


MODELS = mostly(
    st.just("test"),
    st.sampled_from(["", "nonsense", "openai:gpt-4.1", "local:no-such-model", "ollama:"]) | VALUES,
)
AGENT_CONFIGS = st.fixed_dictionaries(
    {"model": MODELS},
    optional={
        "temperature": mostly(st.floats(0, 2), st.floats(-1, 3) | VALUES),
        "max_tokens": mostly(st.integers(1, 4096), st.integers(-5, 2_000_000) | VALUES),
        "system_prompt": mostly(st.text(max_size=40), TEXT | HUGE | VALUES),
        "output_format": mostly(st.sampled_from(["text", "json"]), st.just("xml") | VALUES),
        "output_schema": mostly(st.none() | st.just({"type": "object"}), VALUES),
        "max_retries": mostly(st.integers(0, 5), st.integers(-1, 30) | VALUES),
        "timeout_seconds": mostly(st.floats(1, 600), NUMBERS | VALUES),
        "capabilities": mostly(
            st.lists(st.sampled_from(["tool_use", "memory", "reasoning", "structured_output"]), max_size=2),
            st.just(["telepathy"]) | VALUES,
        ),
        "mixins": mostly(st.just({}), VALUES),
        "base_url": mostly(st.none(), TEXT | VALUES),
    },
)
AGENTS = st.fixed_dictionaries(
    {"name": mostly(NAMES, TEXT | VALUES)},
    optional={
        "role": mostly(st.sampled_from([r.value for r in AgentRole]), st.just("overlord") | VALUES),
        "description": mostly(st.text(max_size=40), TEXT | HUGE | VALUES),
        "config": mostly(AGENT_CONFIGS, VALUES | AGENT_CONFIGS.map(lambda c: {**c, "unknown_field": 1})),
    },
)
TEAMS = mostly(st.dictionaries(mostly(NAMES, TEXT), mostly(AGENTS, VALUES), min_size=1, max_size=4), VALUES)

CONFIG_FIELDS = [
    "stages", "pass_original_input", "retry_failed_stages", "max_stage_retries", "checkpoint_after",
    "aggregation_method", "failure_threshold", "min_agents", "max_rounds", "allow_early_termination",
    "convergence_threshold", "consensus_method", "mediator_agent_name", "num_checkers",
    "require_unanimous_for_approval", "confidence_threshold", "authority_levels", "escalation_threshold",
    "max_delegation_depth", "max_subtasks", "routing_strategy", "load_balance", "fallback_agent_name",
    "mode", "sub_topologies", "conditions", "default", "no_such_option",
]  # fmt: skip
CONFIG_VALUES = mostly(
    st.integers(-2, 5)
    | st.floats(-1, 2)
    | st.booleans()
    | st.lists(NAMES, max_size=3)
    | st.sampled_from(["vote", "synthesis", "mediator", "majority", "weighted", "parallel", "role"]),
    VALUES,
)
TOPOLOGIES = st.fixed_dictionaries(
    {
        "name": mostly(NAMES, TEXT | VALUES),
        "topology_type": mostly(st.sampled_from([t.value for t in TopologyType]), st.just("mesh") | VALUES),
    },
    optional={
        "description": mostly(st.text(max_size=40), TEXT | HUGE | VALUES),
        "config": mostly(st.dictionaries(st.sampled_from(CONFIG_FIELDS), CONFIG_VALUES, max_size=3), VALUES),
    },
)
INPUTS = mostly(
    st.fixed_dictionaries({"prompt": TEXT | HUGE | VALUES}) | st.dictionaries(TEXT, VALUES, max_size=4),
    VALUES,
)

# A team with every slot some topology asks for, on the offline model: fuzzed configs can run.
_SLOTS = ["proponent", "opponent", "mediator", "primary", "checker_1", "checker_2", "aggregator"]
_SLOTS += ["commander", "lieutenant", "worker", "router", "specialist"]
FULL_TEAM = {slot: {"name": f"fuzz-{slot.replace('_', '-')}", "config": {"model": "test"}} for slot in _SLOTS}


# -- the property -------------------------------------------------------------------------------


def _snapshot(path: Path) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every row of every table, to tell whether anything was written."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return [(t, sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)) for t in tables]


class Fuzz:
    """Runs fuzzed input through `LocalRunner.run` on one SQLite file and counts the outcomes."""

    def __init__(self, path: Path) -> None:
        self.path, self.url = path, f"sqlite+aiosqlite:///{path}"
        self.outcomes: Counter[str] = Counter()

    def run(self, topology: Any, agents: Any, input_data: Any) -> None:
        before = _snapshot(self.path)
        try:
            result = asyncio.run(LocalRunner(db_url=self.url).run(topology, agents, input_data))
        except UserInputError as error:
            assert str(error).strip(), "a validation error must say what is wrong"
            assert _snapshot(self.path) == before, (
                f"the database changed although the input was rejected: {error}"
            )
            self.outcomes["rejected"] += 1
            return
        assert isinstance(result, RunResult)
        self.outcomes[f"ran ({result.status})"] += 1


@pytest.fixture(autouse=True)
def _offline_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents without a model use the default one: keep it the offline `test` model, not a local LLM."""
    monkeypatch.setenv("QMCP_DEFAULT_MODEL", "test")


@pytest.fixture
def fuzz(tmp_path: Path) -> Iterator[Fuzz]:
    runner = Fuzz(tmp_path / "fuzz.db")
    yield runner
    print(f"\nfuzz outcomes: {dict(runner.outcomes)}")


def test_fuzzed_input_json(fuzz):
    topology = {"name": "fuzz_pipeline", "topology_type": "pipeline"}
    agents = {"only": {"name": "fuzz-stage", "config": {"model": "test"}}}

    @FUZZ
    @given(INPUTS)
    def check(input_data: Any) -> None:
        fuzz.run(topology, agents, input_data)

    check()
    assert fuzz.outcomes["rejected"] > 0 and any(o.startswith("ran") for o in fuzz.outcomes)


def test_fuzzed_agent_definitions(fuzz):
    topology = {"name": "fuzz_ensemble", "topology_type": "ensemble", "config": {"failure_threshold": 1.0}}

    @FUZZ
    @given(TEAMS)
    def check(agents: Any) -> None:
        fuzz.run(topology, agents, {"prompt": "fuzz"})

    check()
    assert fuzz.outcomes["rejected"] > 0 and any(o.startswith("ran") for o in fuzz.outcomes)


def test_fuzzed_topology_configs(fuzz):
    @FUZZ
    @given(TOPOLOGIES)
    def check(topology: Any) -> None:
        fuzz.run(topology, FULL_TEAM, {"prompt": "fuzz"})

    check()
    assert fuzz.outcomes["rejected"] > 0 and any(o.startswith("ran") for o in fuzz.outcomes)


def test_input_nested_just_under_the_recursion_limit(fuzz):
    topology = {"name": "deep_pipeline", "topology_type": "pipeline"}
    agents = {"only": {"name": "deep-stage", "config": {"model": "test"}}}
    limit = sys.getrecursionlimit()
    for depth in range(limit - 300, limit, 4):
        fuzz.run(topology, agents, {"prompt": "deep", "data": Nested.of(depth)})


# -- `qmcp apply -f FILE` -----------------------------------------------------------------------

FILE_TEXT = st.text(max_size=200)  # a UTF-8 file cannot hold lone surrogates; escapes in YAML/JSON can
FILE_VALUES = (
    st.integers(-2, 5)
    | st.floats(-1, 2)
    | st.booleans()
    | st.lists(NAMES, max_size=3)
    | st.sampled_from(["vote", "synthesis", "mediator", "majority", "parallel", "conditional", "role"])
    | SCALARS
)
AGENT_SPECS = st.fixed_dictionaries(
    {"name": NAMES | FILE_TEXT},
    optional={
        "role": st.sampled_from([*(r.value for r in AgentRole), "overlord"]) | SCALARS,
        "description": FILE_TEXT | SCALARS,
        "config": st.fixed_dictionaries({"model": st.sampled_from(["test", "nonsense", ""])}) | SCALARS,
        "extra": SCALARS,
    },
)
TOPOLOGY_SPECS = st.fixed_dictionaries(
    {
        "name": NAMES | FILE_TEXT,
        "type": st.sampled_from([*(t.value for t in TopologyType), "mesh"]) | SCALARS,
    },
    optional={
        "config": st.dictionaries(st.sampled_from(CONFIG_FIELDS), FILE_VALUES, max_size=3) | SCALARS,
        "agents": st.dictionaries(NAMES | FILE_TEXT, NAMES, max_size=3) | SCALARS,
    },
)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


TEAM_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "agents": st.lists(AGENT_SPECS | SCALARS, max_size=3) | SCALARS,
        "topologies": st.lists(TOPOLOGY_SPECS | SCALARS, max_size=2) | SCALARS,
        "extra_section": SCALARS,
    },
)
OTHER_DOCUMENTS = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(FILE_TEXT, c, max_size=3), max_leaves=8
)
DOCUMENTS = (TEAM_DOCUMENTS | OTHER_DOCUMENTS).filter(_jsonable)
FILES = st.tuples(st.sampled_from(["yaml", "json"]), DOCUMENTS) | st.tuples(
    st.just("raw"), FILE_TEXT | st.binary(max_size=200)
)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """The CLI points logging at CliRunner's stderr, which closes; put the configuration back."""
    from qmcp import observability

    yield
    observability.reset_logging()


@pytest.mark.usefixtures("_restore_logging")
def test_fuzzed_apply_files(tmp_path):
    from qmcp.cli import app

    db = tmp_path / "apply.db"
    outcomes: Counter[str] = Counter()
    seed = tmp_path / "seed.yaml"
    seed.write_text("agents:\n  - {name: seeded, role: analyst, config: {model: test}}\n")
    assert CliRunner().invoke(app, ["--db", str(db), "apply", "-f", str(seed)]).exit_code == 0

    @FUZZ
    @given(FILES)
    def check(case: tuple[str, Any]) -> None:
        kind, content = case
        path = tmp_path / ("team.json" if kind == "json" else "team.yaml")
        if kind == "json":
            path.write_text(json.dumps(content))
        elif kind == "yaml":
            path.write_text(yaml.safe_dump(content, allow_unicode=True))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        before = _snapshot(db)
        result = CliRunner().invoke(app, ["--db", str(db), "apply", "-f", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.stderr
        assert result.exit_code in (0, 2), f"exit {result.exit_code}: {result.stderr}"
        if result.exit_code == 2:
            assert result.stderr.startswith("error: "), result.stderr
            assert _snapshot(db) == before, (
                f"the database changed although the file was rejected: {result.stderr}"
            )
        outcomes["applied" if result.exit_code == 0 else "rejected"] += 1

    check()
    print(f"\napply fuzz outcomes: {dict(outcomes)}")
    assert outcomes["rejected"] > 0 and outcomes["applied"] > 0


def _values(document: Any) -> int:
    """What the parse bound counts: each scalar, list and mapping 1, and each key of a mapping 1."""
    if isinstance(document, dict):
        return 1 + sum(1 + _values(value) for value in document.values())
    if isinstance(document, list):
        return 1 + sum(_values(value) for value in document)
    return 1


@FUZZ
@given(OTHER_DOCUMENTS.filter(_jsonable), st.integers(1, 40), st.sampled_from(["yaml", "json"]))
def test_fuzzed_files_are_counted_exactly_against_the_value_bound(document, bound, kind):
    """With the bound lowered, a file is read whole exactly when it holds at most that many values."""
    from unittest.mock import patch

    from qmcp.cli import _documents

    text = json.dumps(document) if kind == "json" else yaml.safe_dump(document)
    with patch.object(_documents, "MAX_NODES", bound):
        try:
            parsed = _documents.parse_document(f"team.{kind}", text, is_json=kind == "json")
        except UserInputError as error:
            assert _values(document) > bound, str(error)
            assert f"more than {bound:,} values (stopped reading at value {bound + 1:,})" in str(error)
        else:
            assert _values(document) <= bound
            assert parsed == document


def _depth(document: Any) -> int:
    """What the depth bound counts: the lists and mappings nested one in another."""
    children = document.values() if isinstance(document, dict) else document
    if isinstance(document, dict | list):
        return 1 + max((_depth(child) for child in children), default=0)
    return 0


@FUZZ
@given(
    OTHER_DOCUMENTS.filter(_jsonable),
    st.integers(1, 5),
    st.integers(1, 400),
    st.sampled_from(["yaml", "json"]),
)
def test_fuzzed_files_are_held_exactly_to_the_size_and_depth_bounds(document, depth, size, kind):
    """With the bounds lowered, a file is refused for its size exactly when it is larger, else for its
    nesting exactly when it is deeper, and otherwise read whole."""
    from unittest.mock import patch

    from qmcp.cli import _documents

    text = json.dumps(document) if kind == "json" else yaml.safe_dump(document)
    with patch.object(_documents, "MAX_DEPTH", depth), patch.object(_documents, "MAX_FILE_BYTES", size):
        try:
            parsed = _documents.parse_document(f"team.{kind}", text, is_json=kind == "json")
        except UserInputError as error:
            if len(text.encode()) > size:
                assert str(error) == f"team.{kind}: larger than 0 MB; split it into several files"
            else:
                assert _depth(document) > depth and f"nested deeper than {depth} levels" in str(error), error
        else:
            assert len(text.encode()) <= size and _depth(document) <= depth
            assert parsed == document


@FUZZ
@given(
    st.lists(st.booleans(), max_size=12),
    st.integers(1, 10),
    st.integers(1, 4),
    st.sampled_from(["yaml", "json"]),
)
def test_fuzzed_teams_are_held_to_the_entry_bound_and_list_at_most_the_problem_bound(
    valid, entries, listed, kind
):
    """With the bounds lowered: more agents than the entry bound is one line saying so; otherwise each
    invalid agent is one problem, the first `listed` of them shown, then how many more."""
    from unittest.mock import patch

    from qmcp.agentframework import errors
    from qmcp.cli import _teamfile

    agents = [{"name": f"a{i}" if ok else f"Bad{i}", "role": "writer"} for i, ok in enumerate(valid)]
    document = {"agents": agents}
    text = json.dumps(document) if kind == "json" else yaml.safe_dump(document)
    with (
        patch.object(_teamfile, "MAX_ENTRIES", entries),
        patch.object(_teamfile, "MAX_LISTED_PROBLEMS", listed),
        patch.object(errors, "MAX_LISTED_PROBLEMS", listed),
    ):
        try:
            team = _teamfile.load_team(f"team.{kind}", text, is_json=kind == "json")
        except UserInputError as error:
            lines = str(error).splitlines()
        else:
            assert len(agents) <= entries and all(valid)
            assert [a.name for a in team.agents] == [a["name"] for a in agents]
            return
    if len(agents) > entries:
        assert lines == [
            f"team.{kind}: agents: {len(agents):,} entries; a file declares at most {entries:,} agents, "
            "split it into several files"
        ]
        return
    invalid = valid.count(False)
    assert invalid > 0 and len(lines) == min(invalid, listed) + (invalid > listed)
    assert all("invalid agent name 'Bad" in line for line in lines[: min(invalid, listed)])
    if invalid > listed:
        assert lines[-1] == f"team.{kind}: and {invalid - listed:,} more"
