"""`qmcp schema team` and docs/team-files.md: generated from the models `qmcp apply` validates with."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.cli._init import STARTER
from qmcp.cli._schema import team_schema
from qmcp.cli._team_doc import BEGIN, END, render_doc
from qmcp.cli._teamfile import validate_team

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "team-files.md"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = team_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_document_is_the_generators_output():
    text = DOC.read_text()
    assert BEGIN in text and END in text
    assert render_doc(text) == text, "regenerate it: python -m qmcp.cli._team_doc docs/team-files.md"


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
        validate_team("file", document)  # and the parser agrees


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
        from qmcp.agentframework.runners import executable_items

        for agent in team.agents:  # mixin options are checked when the file is planned
            executable_items(agent)
