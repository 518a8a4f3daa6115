"""Models for the Metaflow tests, registered in every flow step through QMCP_METAFLOW_IMPORTS.

Metaflow runs each step in its own process, so a model registered in the test process does not
reach the steps; this module is imported by them (and by the tests) instead.

* `counted` answers like the offline `test` model and appends `counted:<role>` to the file named
  by QMCP_TEST_CALL_LOG, so a test can count the calls made in all of Metaflow's processes.
* `flaky` does the same but fails its very first call, across processes (a marker file says so),
  with a permanent error, so that the step fails without retrying.
* `shaky` does the same but fails its first QMCP_TEST_SHAKY_FAILURES calls (default 2), across
  processes, with a transient error (503): retrying helps.
* `agree` answers like `test`, prefixed with the debate's agreement marker.
* `slow` answers like `counted` after QMCP_TEST_SLOW_SECONDS (default 2) seconds.
* `verdict` answers as a checker who writes prose around a fenced JSON verdict: it approves, unless
  the prompt says `reject`; to a prompt that says `shrug` it writes prose alone (no verdict).
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import make_test_model, register_model, unregister_model
from qmcp.agentframework.topologies import AGREEMENT_MARKER

NAMES = ("counted", "flaky", "shaky", "agree", "slow", "verdict")


def _model(name: str, role: str) -> FunctionModel:
    answer = make_test_model(role).function
    assert answer is not None

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if name == "slow":
            time.sleep(float(os.environ.get("QMCP_TEST_SLOW_SECONDS", "2")))
        log = os.environ.get("QMCP_TEST_CALL_LOG")
        if log and name != "agree":
            with open(log, "a") as calls:
                calls.write(f"{name}:{role}\n")
        if name == "flaky" and log and _first_failure(Path(log).with_suffix(".failed")):
            raise ModelHTTPError(
                status_code=400, model_name=name, body={"error": "scripted first-call failure"}
            )
        if (
            name == "shaky"
            and log
            and _calls(log, name) <= int(os.environ.get("QMCP_TEST_SHAKY_FAILURES", "2"))
        ):
            raise ModelHTTPError(status_code=503, model_name=name, body={"error": "scripted overload"})
        if name == "verdict":
            return ModelResponse(parts=[TextPart(_verdict(messages))])
        response = answer(messages, info)
        assert isinstance(response, ModelResponse)
        if name == "agree":
            text = "".join(part.content for part in response.parts if isinstance(part, TextPart))
            return ModelResponse(parts=[TextPart(f"{AGREEMENT_MARKER} {text}")])
        return response

    return FunctionModel(reply, model_name=name)


def _verdict(messages: list[ModelMessage]) -> str:
    prompt = " ".join(
        part.content
        for message in messages
        for part in message.parts
        if isinstance(part, UserPromptPart) and isinstance(part.content, str)
    )
    if "shrug" in prompt:
        return "Looks fine to me, I suppose."
    approved = "reject" not in prompt
    issues = [] if approved else ["no units"]
    verdict = json.dumps({"approved": approved, "confidence": 0.8, "issues": issues})
    return f"I checked the answer.\n```json\n{verdict}\n```\nThat is my verdict."


def _calls(log: str, name: str) -> int:
    """How many calls of model `name` the log holds (this one included)."""
    return sum(line.startswith(f"{name}:") for line in Path(log).read_text().splitlines())


def _first_failure(marker: Path) -> bool:
    try:
        marker.open("x").close()
    except FileExistsError:
        return False
    return True


def register() -> None:
    for name in NAMES:
        register_model(name, partial(_model, name))


def unregister() -> None:
    for name in NAMES:
        unregister_model(name)


register()
