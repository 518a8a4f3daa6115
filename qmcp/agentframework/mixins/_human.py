"""human_in_loop: an approval or input gate before or after an agent's step.

The first time a gate is reached, a `HumanRequest` is stored and the run stops with the
execution `paused`. Answering the request (Python, CLI or server) and resuming the execution
replays every finished step and passes the gate: an approval lets the run go on, any other
answer ends it `cancelled`, and a request left unanswered past its timeout ends it `failed`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ExecutionPaused, HumanRejectedError, HumanTimeoutError, MixinError
from ..models import HumanRequest
from ..models._agent import utcnow
from ._base import BaseMixin, MixinContext, mixin

__all__ = ["HumanInLoopMixin"]

_DEFAULT_OPTIONS = ["approve", "reject"]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@mixin
class HumanInLoopMixin(BaseMixin):
    """Options: `when` ("before" | "after", default "after"), `prompt`, `options` (the first
    approves; an empty list asks for free text), `timeout_seconds`."""

    name = "human_in_loop"
    description = "Approval or input gate before or after the agent's step; pauses the execution"

    async def before_model(self, ctx: MixinContext) -> None:
        options = ctx.options(self.name)
        if options.get("when", "after") != "before":
            return
        prompt = options.get("prompt") or f"{ctx.agent.name} is about to work on:\n{ctx.prompt[:2000]}"
        answer = await self._gate(ctx, "before", prompt, options)
        if not options.get("options", _DEFAULT_OPTIONS):
            ctx.prompt = f"{ctx.prompt}\n\nHuman input: {answer}"

    async def on_end(self, ctx: MixinContext) -> None:
        options = ctx.options(self.name)
        if options.get("when", "after") != "after":
            return
        prompt = (
            options.get("prompt")
            or f"Approve the output of {ctx.agent.name} ({ctx.slot})?\n{(ctx.reply or '')[:2000]}"
        )
        await self._gate(ctx, "after", prompt, options)

    async def _gate(self, ctx: MixinContext, where: str, prompt: str, options: dict[str, Any]) -> str:
        db = ctx.resources.db
        if db is None:
            raise MixinError("human_in_loop needs a runner with a database")
        key = f"{ctx.key}#human-{where}"
        choices = list(options.get("options", _DEFAULT_OPTIONS))
        timeout = options.get("timeout_seconds")
        request = await db.find_human_request(ctx.execution_id, key)
        if request is None:
            request = HumanRequest(
                execution_id=ctx.execution_id,
                key=key,
                prompt=prompt,
                options=choices,
                timeout_seconds=timeout,
            )
            await db.add_human_request(request)
            raise ExecutionPaused(str(request.id), prompt)
        if request.status == "pending":
            expired = request.timeout_seconds is not None and utcnow() > _aware(
                request.created_at
            ) + timedelta(seconds=request.timeout_seconds)
            if not expired:
                raise ExecutionPaused(str(request.id), request.prompt)
            await db.expire_human_request(request.id)
            raise HumanTimeoutError(
                f"nobody answered human request {request.id} within {request.timeout_seconds}s"
            )
        if request.status != "answered":
            raise HumanTimeoutError(f"human request {request.id} {request.status}")
        answer = request.response or ""
        ctx.extras[self.name] = {"request_id": str(request.id), "gate": where, "response": answer}
        if request.options and answer != request.options[0]:
            raise HumanRejectedError(f"a human answered {answer!r} at step {ctx.key!r}")
        return answer
