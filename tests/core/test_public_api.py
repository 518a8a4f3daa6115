"""The public surface: pinned so that it never changes by accident."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

import qmcp.agentframework.models as models
import qmcp.agentframework.runners as runners
from qmcp.agentframework.models import AgentConfig, AgentType, EnsembleConfig, Models, Topology

SEED_MODEL_NAMES = {
    "AgentType",
    "AgentRole",
    "AgentConfig",
    "Topology",
    "TopologyType",
    "EnsembleConfig",
    "Models",
    "ModelConfig",
    "Execution",
    "ExecutionStatus",
    "ExecutionStep",
    "PipelineConfig",
    "DebateConfig",
    "CrossCheckConfig",
    "ChainOfCommandConfig",
    "DelegationConfig",
    "CompoundConfig",
    "TopologyMembership",
    "AgentCapability",
    "HumanRequest",
}


def test_models_exports():
    assert set(models.__all__) >= SEED_MODEL_NAMES
    assert all(hasattr(models, name) for name in models.__all__)


def test_runner_exports():
    assert set(runners.__all__) >= {
        "AsyncRunner",
        "BaseRunner",
        "LocalRunner",
        "MetaflowRunner",
        "RunConfig",
        "RunResult",
        "RunnerRegistry",
        "runner",
    }


def test_spend_control_and_host_etiquette_exports():
    from qmcp import observability
    from qmcp.agentframework import errors, llm, store, topologies

    assert "BudgetExceededError" in errors.__all__ and issubclass(errors.BudgetExceededError, errors.RunError)
    assert {"RateLimit", "RateLimiter", "RateLimits", "parse_rate_limits", "rate_limits"} <= set(llm.__all__)
    assert {"Budget"} <= set(topologies.__all__) and "RateLimitConfig" in runners.__all__
    assert {"EngineCache", "close_engines", "engine_cache", "CostReport", "CostLine"} <= set(store.__all__)
    assert {
        "configure_logging",
        "reset_logging",
        "continued_trace",
        "trace_carrier",
        "trace_environment",
    } <= set(observability.__all__)
    for module in (llm, store, topologies, observability):
        assert all(hasattr(module, name) for name in module.__all__)


def test_run_config_defaults_match_the_seed():
    config = runners.RunConfig()
    assert (config.correlation_id, config.timeout_seconds, config.checkpoint_enabled) == (None, 3600, True)
    assert (config.retry_on_failure, config.max_retries, config.log_level) == (True, 3, "INFO")
    assert config.trace_enabled and config.metrics_enabled


def test_agent_config_from_the_registry():
    config = AgentConfig(model_config_obj=Models.CLAUDE_SONNET_4)
    assert config.model == "anthropic:claude-sonnet-4-20250514"
    stored = AgentType.model_validate({"name": "a", "config": config.model_dump()})
    assert stored.agent_config.model_config_obj == Models.CLAUDE_SONNET_4


@pytest.mark.parametrize(
    "bad",
    [{"temperature": 2.5}, {"temperature": -1}, {"max_tokens": 0}, {"max_retries": -1}, {"unknown": 1}],
)
def test_agent_config_ranges(bad):
    with pytest.raises(ValidationError):
        AgentConfig(**bad)


@pytest.mark.parametrize(
    ("topology_type", "config"),
    [
        ("ensemble", {"failure_threshold": 1.5}),
        ("ensemble", {"aggregation_method": "median"}),
        ("debate", {"max_rounds": 0}),
        ("crosscheck", {"num_checkers": 1}),
        ("crosscheck", {"consensus_method": "plurality"}),
        ("pipeline", {"stages": ["a"], "checkpoint_after": ["b"]}),
        ("chain", {"authority_levels": ["only"]}),
    ],
)
def test_topology_config_ranges(topology_type, config):
    with pytest.raises(ValidationError):
        Topology.model_validate({"name": "t", "topology_type": topology_type, "config": config})


def test_ensemble_config_dump_round_trips():
    topology = Topology.model_validate(
        {
            "name": "t",
            "topology_type": "ensemble",
            "config": EnsembleConfig(aggregation_method="synthesis").model_dump(),
        }
    )
    assert topology.parsed_config == EnsembleConfig(aggregation_method="synthesis")


@pytest.mark.slow  # a fresh interpreter's imports
def test_import_qmcp_stays_light():
    code = "import sys, qmcp; print(sorted(m for m in ('pydantic_ai', 'sqlalchemy', 'metaflow', 'xllamacpp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter's imports
@pytest.mark.parametrize(
    "module",
    [
        "qmcp.agentframework.runners",
        "qmcp.agentframework.runners.metaflow_helpers",
        "qmcp.agentframework.topologies",
        "qmcp.agentframework.mixins",
        "qmcp.agentframework.llm",
        "qmcp.agentframework.store",
        "qmcp.testing",
    ],
)
def test_the_layers_import_pydantic_ai_only_for_a_model_call(module):
    """pydantic-ai is about a third of a first run's imports: the layers load it at a model call, no earlier."""
    code = f"import sys, {module}; print('pydantic_ai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


_MODEL_CALL = """
import asyncio, json, sys
from qmcp.agentframework.llm import ModelChoice, ScriptedModel, call_model, register_model

register_model("scripted:light", ScriptedModel(name="scripted:light", replies=lambda prompt, _i: prompt.upper()).model)
model = ModelChoice("scripted:light").resolve("generalist")
reply = asyncio.run(
    call_model(model, "scripted:light", system=None, messages=[{"role": "user", "content": "hi"}], settings={})
)
heavy = ("sqlalchemy", "sqlmodel", "pydantic_ai", "pydantic_settings", "opentelemetry", "prometheus_client")
loaded = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"text": reply.text, "requests": reply.usage.requests, "loaded": loaded}))
"""


@pytest.mark.slow  # a fresh interpreter's imports
def test_a_registered_model_answers_without_sqlalchemy_or_sqlmodel():
    """The model layer uses no table: registering a model and calling it (as a Metaflow member or a script
    does) loads neither SQLAlchemy nor SQLModel, which only the tables' modules import (and pydantic-ai
    only a model that needs it); nor the settings (pydantic-settings), nor OpenTelemetry and prometheus,
    which only a traced call loads."""
    out = subprocess.run(
        [sys.executable, "-c", _MODEL_CALL], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == {"text": "HI", "requests": 1, "loaded": []}


_SCHEMA = """
from qmcp.agentframework.models import {first}
from qmcp.agentframework.models import metadata
print(sorted(metadata.tables), sorted(str(fk.column) for t in metadata.tables.values() for fk in t.foreign_keys))
"""


@pytest.mark.slow  # a fresh interpreter's imports
def test_the_tables_load_together_however_the_first_is_reached():
    """The tables load on first use, all at once: `metadata` reached first holds all of them (the schema
    is made and migrated from it), and a table reached first can resolve its foreign keys (the executions'
    `topology_id` names the topologies' table, in another module)."""
    seen = [
        subprocess.run(
            [sys.executable, "-c", _SCHEMA.format(first=first)], capture_output=True, text=True, check=True
        ).stdout
        for first in ("metadata", "Execution", "StepUsage")
    ]
    assert seen[0] == seen[1] == seen[2]
    assert "'step_usage'" in seen[0] and "'topologies.id'" in seen[0]


@pytest.mark.slow  # a fresh interpreter's imports
def test_importing_the_runners_reads_no_attribute_docstrings():
    """pydantic finds attribute docstrings by scanning every loaded module, per class: qmcp's models
    describe their fields with `Field(description=...)` instead."""
    code = (
        "import sys\n"
        "from pydantic._internal import _docs_extraction, _fields\n"
        "read = []\n"
        "_fields.extract_docstrings_from_cls = lambda cls, **kw: read.append(cls.__qualname__) or {}\n"
        "import qmcp.agentframework.runners\n"
        "print(read)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


ROOT_EXPORTS = [
    "AgentConfig",
    "AgentRole",
    "AgentType",
    "AsyncRunner",
    "BaseMixin",
    "BaseRunner",
    "BaseTopology",
    "ChainOfCommandConfig",
    "CompoundConfig",
    "CrossCheckConfig",
    "Database",
    "DebateConfig",
    "DelegationConfig",
    "EnsembleConfig",
    "Execution",
    "ExecutionStatus",
    "LocalRunner",
    "MetaflowRunner",
    "ModelConfig",
    "Models",
    "PipelineConfig",
    "QmcpError",
    "RunConfig",
    "RunError",
    "RunResult",
    "StepContext",
    "Topology",
    "TopologyType",
    "Usage",
    "UserInputError",
    "__version__",
    "close_engines",
    "mixin",
    "register_model",
    "runner",
    "topology",
]


def test_the_package_root_exports_a_small_curated_surface():
    """`from qmcp import ...` is the first run's one import: the same objects as their layers'."""
    import qmcp
    from qmcp.agentframework import errors, llm, mixins, store, topologies

    assert sorted(qmcp.__all__) == ROOT_EXPORTS
    layers = (models, runners, store, topologies, mixins, llm, errors)
    for name in qmcp.__all__:
        if name == "__version__":
            continue
        owners = [layer for layer in layers if name in getattr(layer, "__all__", ())]
        assert owners and getattr(qmcp, name) is getattr(owners[0], name), name
    assert set(dir(qmcp)) >= set(qmcp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = qmcp.nope  # type: ignore[attr-defined]


@pytest.mark.slow  # a fresh interpreter's imports
def test_the_package_root_imports_its_exports_lazily():
    code = (
        "import sys, qmcp\n"
        "light = not any(m in sys.modules for m in ('sqlalchemy', 'pydantic_ai', 'qmcp.agentframework.runners'))\n"
        "from qmcp import LocalRunner, AsyncRunner, MetaflowRunner, RunConfig, RunResult, AgentType, AgentConfig, Topology, Models\n"
        "print(light, 'metaflow' in sys.modules, LocalRunner.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "qmcp.agentframework.runners._local"]
