"""human_in_loop: an approval or input gate before or after an agent's step.

The first time a gate is reached, a `HumanRequest` is stored (its id is `{execution_id}:{step
key}`, written safe for a URL path by `gate_request_id`, the same on every replay) and the run stops
with the execution `paused`. Answering the request (Python, CLI, or the QMCP server's
`POST /v1/human/responses`) and resuming the execution replays every finished step and passes the
gate: an approval lets the run go on, any other answer ends it `cancelled`, and a request left
unanswered past its timeout ends it `failed`.

With `QMCP_SERVER_URL` set, the request is created on that QMCP server instead (same id, its context
naming the execution, step, slot and agent; `QMCP_API_TOKEN` authenticates), and read from it: the
gate waits up to the option `wait_seconds` (default 0) polling for an answer, then pauses the run.
A server sharing the run's database resumes the run when the request is answered there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...config import settings
from ..errors import ExecutionPaused, HumanRejectedError, HumanTimeoutError, MixinError, NotFoundError
from ..models import HumanRequest, HumanRequestStatus, HumanRequestType, gate_request_id
from ._base import BaseMixin, MixinContext, mixin

__all__ = ["HumanInLoopMixin"]


class HumanInLoopOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: Literal["before", "after"] = Field(
        default="after", description="Gate before the model call, or after the step is recorded."
    )
    prompt: str | None = Field(
        default=None, description="What the person is asked [default: names the agent and its work]."
    )
    options: list[str] = Field(
        default_factory=lambda: ["approve", "reject"],
        description="The answers offered; the first approves. An empty list asks for free text.",
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Unanswered this long, the request expires and the run fails [default: never].",
    )
    wait_seconds: float = Field(
        default=0.0,
        ge=0,
        le=86_400,
        description="On a QMCP server: how long to poll for an answer before pausing.",
    )


@mixin
class HumanInLoopMixin(BaseMixin):
    """Options: `HumanInLoopOptions` (`when`, `prompt`, `options`, `timeout_seconds`, `wait_seconds`)."""

    name = "human_in_loop"
    options_model = HumanInLoopOptions
    description = "Approval or input gate before or after the agent's step; pauses the execution"

    async def before_model(self, ctx: MixinContext) -> None:
        options: HumanInLoopOptions = self.options(ctx)
        if options.when != "before":
            return
        # a gate's own question comes with what it asks about: the person decides on the text itself
        asked = options.prompt or f"{ctx.agent.name} is about to work on:"
        prompt = f"{asked}\n{ctx.prompt[:2000]}"
        answer = await self._gate(ctx, "before", prompt, options)
        if not options.options:
            ctx.prompt = f"{ctx.prompt}\n\nHuman input: {answer}"

    async def on_end(self, ctx: MixinContext) -> None:
        options: HumanInLoopOptions = self.options(ctx)
        if options.when != "after":
            return
        asked = options.prompt or f"Approve the output of {ctx.agent.name} ({ctx.slot})?"
        prompt = f"{asked}\n{(ctx.reply or '')[:2000]}"
        await self._gate(ctx, "after", prompt, options)

    async def _gate(self, ctx: MixinContext, where: str, prompt: str, options: HumanInLoopOptions) -> str:
        choices = list(options.options)
        request_id = gate_request_id(ctx.execution_id, f"{ctx.key}#human-{where}")
        server = settings().server_url
        if server:
            return await _remote_gate(server, ctx, request_id, where, prompt, choices, options)
        db = ctx.resources.db
        if db is None:
            raise MixinError("human_in_loop needs a runner with a database, or QMCP_SERVER_URL")
        try:
            request = await db.get_human_request(request_id)
        except NotFoundError:
            request = HumanRequest(
                id=request_id,
                request_type=HumanRequestType.APPROVAL if choices else HumanRequestType.INPUT,
                prompt=prompt,
                options=choices or None,
                context=_context(ctx, where),
                timeout_seconds=options.timeout_seconds,
                execution_id=ctx.execution_id,
                key=f"{ctx.key}#human-{where}",
            )
            await db.create_human_request(request)
            raise ExecutionPaused(request.id, prompt) from None
        if request.status == HumanRequestStatus.PENDING and request.expired():
            await db.expire_due_human_requests()
            request = await db.get_human_request(request_id)
        if request.status == HumanRequestStatus.PENDING:
            raise ExecutionPaused(request.id, request.prompt)
        if request.status == HumanRequestStatus.EXPIRED:
            raise HumanTimeoutError(
                f"nobody answered human request {request.id} within {request.timeout_seconds:g}s"
            )
        answer = await db.get_human_response(request.id)
        if answer is None:  # cancelled
            raise HumanRejectedError(f"human request {request.id} was {request.status} at step {ctx.key!r}")
        return _decide(ctx, request.id, where, request.options, answer.response)


def _context(ctx: MixinContext, where: str) -> dict[str, Any]:
    return {
        "execution_id": str(ctx.execution_id),
        "step": ctx.key,
        "slot": ctx.slot,
        "agent": ctx.agent.name,
        "gate": where,
    }


def _decide(ctx: MixinContext, request_id: str, where: str, options: list[str] | None, answer: str) -> str:
    """Apply a person's answer: the first option approves, another rejects; free text goes on."""
    ctx.extras[HumanInLoopMixin.name] = {"request_id": request_id, "gate": where, "response": answer}
    if options and answer != options[0]:
        raise HumanRejectedError(f"a human answered {answer!r} at step {ctx.key!r}")
    return answer


async def _remote_gate(
    server: str,
    ctx: MixinContext,
    request_id: str,
    where: str,
    prompt: str,
    choices: list[str],
    options: HumanInLoopOptions,
) -> str:
    """The gate on a QMCP server: create the request there (once), then read its answer."""
    import os

    from ...client import AsyncQmcpClient, HumanRequestConflictError, QmcpClientError

    timeout = options.timeout_seconds
    token = os.environ.get("QMCP_API_TOKEN", "")
    db = ctx.resources.db  # a server sharing it takes the gate's id only with the run's owner token
    run_token = (await db.stored_execution(ctx.execution_id)).owner_token if db is not None else None
    async with AsyncQmcpClient(server, token=token, correlation_id=ctx.resources.correlation_id) as client:
        try:
            with contextlib.suppress(HumanRequestConflictError):  # made by an earlier attempt of this run
                await client.create_human_request(
                    request_id,
                    "approval" if choices else "input",
                    prompt,
                    options=choices or None,
                    context=_context(ctx, where),
                    timeout_seconds=int(min(max(timeout or 86_400, 60), 86_400)),
                    run_token=run_token,
                )
            deadline = time.monotonic() + options.wait_seconds
            while True:
                request, answer = await client.get_human_request(request_id)
                if answer is not None:
                    return _decide(ctx, request_id, where, request.options, answer.response)
                if request.status == "expired":
                    raise HumanTimeoutError(f"nobody answered human request {request_id} in time")
                if request.status == "cancelled":
                    raise HumanRejectedError(f"human request {request_id} was cancelled at step {ctx.key!r}")
                if time.monotonic() >= deadline:
                    raise ExecutionPaused(request_id, request.prompt)
                await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        except QmcpClientError as error:
            raise MixinError(f"the QMCP server at {server} refused the human request: {error}") from None
