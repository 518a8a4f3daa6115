"""`qmcp schema team` and docs/team-files.md: generated from the models `qmcp apply` validates with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.cli._init import STARTER
from qmcp.cli._schema import team_schema
from qmcp.cli._team_doc import BEGIN, END
from qmcp.cli._teamfile import validate_team

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "team-files.md"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = team_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.slow  # renders the document in a fresh interpreter
def test_the_document_is_the_generators_output():
    """Rendered in a process of its own: the document covers qmcp's own types and mixins, and this
    process has registered the test plugins' too (tests/ext_plugin.py, imported by other tests)."""
    text = DOC.read_text()
    assert BEGIN in text and END in text
    env = {k: v for k, v in os.environ.items() if k != "QMCP_IMPORTS"}
    rendered = subprocess.run(
        [sys.executable, "-c", RENDER, str(DOC)], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert rendered == text, "regenerate it: python -m qmcp.cli._team_doc docs/team-files.md"


RENDER = """
import sys
from pathlib import Path
from qmcp.cli._team_doc import render_doc
sys.stdout.write(render_doc(Path(sys.argv[1]).read_text()))
"""


def test_the_document_names_every_field_the_parser_knows():
    from qmcp.agentframework.models import AgentConfig, TopologyType, config_class_for

    text = DOC.read_text()
    for name in AgentConfig.model_fields:
        assert f"| `{name}` |" in text, name
    for topology_type in TopologyType:
        assert f"`config` of `type: {topology_type.value}`" in text
        for name in config_class_for(topology_type).model_fields:
            assert f"| `{name}` |" in text, (topology_type, name)


def test_schema_command_prints_the_schema(cli):
    assert json.loads(cli.ok("schema", "team").stdout) == team_schema()


def test_examples_and_the_starter_match_the_schema(validator):
    files = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").rglob("*.yaml"))]
    for document in [*files, yaml.safe_load(STARTER)]:
        assert list(validator.iter_errors(document)) == []
        assert validate_team("file", document).problems == ()  # and the parser agrees


BAD = [
    {"agents": [{"name": "a", "model": "test"}]},  # the first guess of the issue: model on the agent
    {"agents": [{"name": "a", "config": {"modle": "test"}}]},
    {"agents": [{"name": "a", "config": {"mixins": {"reasoning": {"styl": "x"}}}}]},
    {"agents": [{"name": "a", "config": {"mixins": {"telepathy": {}}}}]},
    {"agents": [{"name": "a", "config": {"temperature": 3}}]},
    {"topologies": [{"name": "t", "type": "debate", "config": {"max_round": 2}}]},
    {"topologies": [{"name": "t", "type": "blob"}]},
    {"teams": []},
]


@pytest.mark.parametrize("document", BAD, ids=lambda d: json.dumps(d)[:60])
def test_schema_and_parser_refuse_the_same_mistakes(validator, document):
    assert list(validator.iter_errors(document)), "the schema accepts it"
    with pytest.raises(InvalidConfigError):
        team = validate_team("file", document)
        if team.problems:
            raise InvalidConfigError.listing("file", list(team.problems))
        from qmcp.agentframework.runners import executable_items

        for agent in team.agents:  # mixin options are checked when the file is planned
            executable_items(agent)


def test_a_validated_document_checks_what_apply_would_not_check_again():
    """`apply_team` trusts `validate_team`'s checks (it does not run them twice), so the validator keeps
    what only `apply_team` checked before: a config that JSON cannot hold (from Python, not a file)."""
    document = {
        "agents": [
            {"name": "ok", "config": {"model": "test"}},
            {
                "name": "odd",
                "config": {"model": "test", "output_schema": {"type": "object", "x": float("nan")}},
            },
        ]
    }
    team = validate_team("file", document)
    assert team.validated and [agent.name for agent in team.agents] == ["ok"]
    ((problem,),) = [team.problems]
    assert problem.startswith("file: agents[1].config") and "NaN" in problem, problem
    assert "odd" in team.invalid_agents
