"""A model for the Metaflow tests registered by a module that imports qmcp's model layer alone, as a
user's model registration may: a task making a prepared call then loads no store, topology or pydantic-ai.

* `light` answers like the `test` model would with a fixed digest and appends `light:<role>` to the file
  named by QMCP_TEST_CALL_LOG, so a test can count the calls made in all of Metaflow's processes.
* `light-broken` is refused by its provider on every call (`auth`: a permanent error).
"""

from __future__ import annotations

import os

from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model

NAMES = ("light", "light-broken")


def _model(name: str, role: str) -> ScriptedModel:
    def reply(prompt: str, index: int) -> str:
        log = os.environ.get("QMCP_TEST_CALL_LOG")
        if log:
            with open(log, "a") as calls:
                calls.write(f"{name}:{role}\n")
        return f"{role} answers {prompt.splitlines()[0]}"

    failures = {index: "auth" for index in range(100)} if name == "light-broken" else {}
    return ScriptedModel(name=name, replies=reply, failures=failures)


def register() -> None:
    for name in NAMES:
        register_model(name, lambda role, name=name: _model(name, role))


def unregister() -> None:
    for name in NAMES:
        unregister_model(name)


register()  # in each task of a flow, which imports this module through QMCP_METAFLOW_IMPORTS
