"""docs/mixins.md: its options tables are generated from the mixins' options models, its example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from qmcp.agentframework.mixins import MixinRegistry
from qmcp.agentframework.mixins._docs import options_reference
from qmcp.agentframework.models import AgentCapability, AgentConfig

DOC = Path(__file__).parents[2] / "docs" / "mixins.md"


def test_the_options_section_matches_the_options_models():
    text = DOC.read_text()
    section = text.split("<!-- options:begin -->\n", 1)[1].split("<!-- options:end -->", 1)[0]
    built_in = sorted(c.value for c in AgentCapability)
    assert section == options_reference(built_in), (
        "docs/mixins.md is out of date: regenerate its options section with "
        "`python -m qmcp.agentframework.mixins._docs`"
    )
    for name in built_in:  # every option of every built-in mixin has a row that says what it does
        for field_name, field in MixinRegistry.get(name).options_model.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"
            assert f"| `{field.alias or field_name}` |" in section


def test_the_example_mixin_registers_and_validates_its_options():
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example is not None
    namespace: dict[str, object] = {"__name__": "docs_mixins_example"}
    exec(compile(example.group(1), str(DOC), "exec"), namespace)
    try:
        assert AgentConfig(capabilities=["loud"], mixins={"loud": {"suffix": "?"}}).capabilities == ["loud"]
        with pytest.raises(ValidationError, match=r"mixins.loud.sufix: Extra inputs are not permitted"):
            AgentConfig(capabilities=["loud"], mixins={"loud": {"sufix": "?"}})
    finally:
        MixinRegistry.unregister("loud")
