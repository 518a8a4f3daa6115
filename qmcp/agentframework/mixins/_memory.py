"""memory: an agent's long-term memory, recalled into its system prompt and added to after each step.

Memories live in the run's database (`AgentMemory`, through `MemoryStore`) under the agent's
name, so they carry over from one execution to the next. Only real model calls touch them: a
replayed step neither recalls nor remembers, so resuming an execution does not duplicate them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MixinError
from ..store import MemoryStore
from ._base import BaseMixin, MixinContext, mixin
from ._reasoning import split_reasoning
from ._structured_output import parse_options

__all__ = ["MemoryMixin"]

_SUMMARY_CHARS = 300


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=5, ge=0, le=100, description="Memories recalled into one prompt at most.")
    half_life_days: float = Field(
        default=7.0, gt=0, description="A memory's weight halves every this many days."
    )
    max_memories: int | None = Field(
        default=None, ge=1, description="Memories kept per agent; the weakest go first [default: all]."
    )
    tags: list[str] = Field(default_factory=list, description="Stored with each memory.")
    importance: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the memories this agent stores."
    )


def _clip(text: str, limit: int = _SUMMARY_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _task_line(prompt: str) -> str:
    """The prompt's first line, without the "Task:" label topologies put before it."""
    line = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    return line.removeprefix("Task:").strip()


@mixin
class MemoryMixin(BaseMixin):
    """Options: `limit` (memories recalled per step, default 5), `half_life_days` (default 7),
    `max_memories` (prune to this many after remembering), `tags` (added to every memory this
    agent forms, e.g. a project or an execution label), `importance` (of those memories, 0..1).
    """

    name = "memory"
    options_model = _Options
    description = "Remembers each exchange and recalls the relevant memories in later steps and runs"

    async def before_model(self, ctx: MixinContext) -> None:
        options = parse_options(ctx, self.name, _Options)
        recalled = await self._store(ctx, options).recall(ctx.agent.name, ctx.prompt, limit=options.limit)
        ctx.extras[self.name] = {
            "recalled": [
                {"id": r.memory.id, "content": r.memory.content, "relevance": round(r.relevance, 4)}
                for r in recalled
            ]
        }
        if recalled:
            lines = "\n".join(f"- {r.memory.content}" for r in recalled)
            ctx.system = f"{ctx.system}\n\nWhat you remember from earlier work, most relevant first:\n{lines}"

    async def after_response(self, ctx: MixinContext) -> None:
        options = parse_options(ctx, self.name, _Options)
        store = self._store(ctx, options)
        # The answer without any reasoning before it, whether or not the reasoning mixin ran yet.
        answer = split_reasoning(ctx.reply or "")[1]
        summary = f"Task: {_clip(_task_line(ctx.prompt))}\nAnswer: {_clip(answer)}"
        memory = await store.remember(
            ctx.agent.name, summary, tags=[ctx.slot, *options.tags], importance=options.importance
        )
        record = ctx.extras.setdefault(self.name, {"recalled": []})
        record["remembered"] = memory.id
        if options.max_memories is not None:
            record["pruned"] = await store.prune(ctx.agent.name, keep=options.max_memories)

    @staticmethod
    def _store(ctx: MixinContext, options: _Options) -> MemoryStore:
        if ctx.resources.db is None:
            raise MixinError("the memory mixin needs a runner with a database")
        return MemoryStore(ctx.resources.db, half_life_days=options.half_life_days)
