"""The console's time travel: the fork form of a step ("Fork from here") and the page comparing two
executions step by step.

The form posts here like the run form (the server's Origin check guards both) and goes through the
same operation as every door (`RunManager.fork`, over `qmcp.app.fork_execution`) as a console client:
the model is one the server's policy offers, a refusal re-renders the form with its sentence, and a
started fork opens its own page. Only what the person changed is sent: replies that differ from the
recorded ones, agents not left "as recorded", an input that is not the parent's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...agentframework.errors import QmcpError, UserInputError
from ...agentframework.models import Execution, ExecutionStep
from ...app import CallerPolicy, Door, ForkRequest, diff_executions
from ..api import caller
from ._lineage import editable_steps
from ._routes import _db, _error, _execution, _form, _render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_OUTPUT = "output:"
"""Form fields `output:KEY`: the reply of step KEY."""
_AGENT = "agent:"
"""Form fields `agent:SLOT`: the stored agent for SLOT (empty: as recorded)."""


@dataclass
class ForkForm:
    """The form's values as the person left them: what the page shows again after a refusal."""

    at: str
    model: str = ""
    agents: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """The replies changed from the recorded ones, by step key."""
    input: str = ""

    @classmethod
    def posted(cls, fields: Mapping[str, str], steps: Sequence[ExecutionStep]) -> ForkForm:
        recorded = {step.key: step.response or "" for step in steps}
        outputs = {}
        for name, text in fields.items():
            if name.startswith(_OUTPUT):
                key, text = name.removeprefix(_OUTPUT), _lines(text)  # a browser ends lines with CR LF
                if key not in recorded or text != _lines(recorded[key]):
                    outputs[key] = text  # a step the fork may not edit is the operation's to refuse
        return cls(
            at=fields.get("at", ""),
            model=fields.get("model", "").strip(),
            agents={n.removeprefix(_AGENT): v for n, v in fields.items() if n.startswith(_AGENT) and v},
            outputs=outputs,
            input=fields.get("input", ""),
        )

    def request(self, execution: Execution) -> ForkRequest:
        """The fork asked for; `UserInputError` for an input that is not a JSON object."""
        try:
            data = json.loads(self.input or "{}")
        except json.JSONDecodeError as error:
            raise UserInputError(
                f"the input is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
        if not isinstance(data, dict):
            raise UserInputError('the input must be a JSON object, like {"prompt": "..."}')
        return ForkRequest(
            str(execution.id),
            self.at,
            model=self.model or None,
            agents=self.agents,
            input=None if data == execution.input_data else data,
            set_output=self.outputs,
        )


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


async def _page(
    request: Request,
    execution: Execution,
    steps: Sequence[ExecutionStep],
    form: ForkForm,
    problem: str | None = None,
) -> HTMLResponse:
    try:
        editable = editable_steps(execution, steps, form.at)
    except QmcpError as error:
        return _error(request, error)
    policy: CallerPolicy = request.app.state.qmcp.runs.policy
    models = [policy.pinned_model] if policy.pinned_model else sorted(policy.allowed_models)
    return _render(
        request,
        "fork.html",
        code=200 if problem is None else 400,
        execution=execution,
        editable=editable,
        inherited=len(editable) - 1,
        models=models,
        pinned=policy.pinned_model,
        agents=[agent.name for agent in await _db(request).list_agents()],
        slots=[(slot, str(spec.get("name", slot))) for slot, spec in execution.agents_snapshot.items()],
        form=form,
        problem=problem,
    )


@router.get("/executions/{execution_id}/fork")
async def fork_page(request: Request, execution_id: str, at: str = "") -> HTMLResponse:
    try:
        execution, steps = await _execution(request, execution_id)
    except QmcpError as error:
        return _error(request, error)
    form = ForkForm(at, input=json.dumps(execution.input_data, indent=2, ensure_ascii=False))
    return await _page(request, execution, steps, form)


@router.post("/executions/{execution_id}/fork")
async def fork(request: Request, execution_id: str) -> Response:
    fields = await _form(request)
    try:
        execution, steps = await _execution(request, execution_id)
    except QmcpError as error:
        return _error(request, error)
    form = ForkForm.posted(fields, steps)
    try:
        started = await request.app.state.qmcp.runs.fork(
            form.request(execution), caller(request, Door.CONSOLE), trace=request.headers
        )
    except QmcpError as error:
        return await _page(request, execution, steps, form, str(error))
    return RedirectResponse(f"/executions/{started.id}", status_code=303)


@router.get("/executions/{execution_id}/diff")
async def diff_page(request: Request, execution_id: str, other: str = "") -> HTMLResponse:
    """This execution (B) against `other` (A; by default the execution it was forked from)."""
    db = _db(request)
    try:
        execution = await db.get_execution(execution_id)
        base = other or (str(execution.parent_id) if execution.parent_id else "")
        if not base:
            raise UserInputError(
                f"execution {execution.id} is not a fork: name the execution to compare it with "
                f"(/executions/{execution.id}/diff?other=ID)"
            )
        diff = await diff_executions(db, base, execution.id)
    except QmcpError as error:
        return _error(request, error)
    return _render(request, "diff.html", diff=diff)
