"""What an eval is asked to do (`EvalRequest`) and what it stores to be resumed (`EvalSpec`).

The request is what a door receives: a dataset (a file the operator names, or records a remote
caller sends), the variants, the scorer and the options. The spec is written on the `EvalRun` row
before any cell starts and holds everything `qmcp eval resume` needs: the samples themselves (the
file may change or vanish), each variant's team digest (a team changed since is refused, not mixed
into the comparison), the scorer and the per-cell run options.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..agentframework.errors import InvalidConfigError
from ..agentframework.models import AgentType, Topology

__all__ = [
    "EVAL_STATUSES",
    "EvalRequest",
    "EvalSpec",
    "VariantSpec",
    "parse_budget",
    "reserved_name",
    "team_digest",
]

EVAL_STATUSES = ("running", "completed", "stopped (budget)", "interrupted")
"""An `EvalRun`'s status: `running`, `completed` (every cell scored), `stopped (budget)` (`--max-cost`
reached before every cell started), `interrupted` (Ctrl-C; and how a `running` eval whose process was
killed reads, `qmcp.app.eval_status`: resume it)."""

SINGLE_CALL = "single-call"
JUDGE = "judge"


class EvalRequest(BaseModel):
    """An eval as a door receives it. A remote caller sends `records`, never a `dataset` path, and
    names no `python:` scorer (`qmcp.eval.start_eval` refuses both)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None
    """A JSONL or CSV file (the operator's)."""
    records: list[dict[str, Any]] | None = None
    """The samples as records (what a remote caller sends)."""
    columns: dict[str, str] | None = None
    """Dataset field → column name, e.g. {"input": "question", "target": "answer"}."""
    skip_bad: bool = False
    topologies: list[str] = Field(default_factory=list)
    single_call: list[str] = Field(default_factory=list)
    """Agents whose one call is a baseline variant."""
    scorer: str = "exact"
    samples: int | None = Field(default=None, ge=1)
    """The first N samples only."""
    repeat: int = Field(default=1, ge=1, le=100)
    model: str | None = None
    """Every agent of every cell runs on this model (the run's model override)."""
    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """No new cell starts once the eval's spend reaches this."""
    max_concurrent: int = Field(default=8, ge=1, le=10_000)
    """Cells and model calls in flight at once, across all cells (one shared limit)."""
    budget_per_sample: str | None = None
    """Each cell's budget: tokens (`5000`) or USD (`0.01usd`)."""


class VariantSpec(BaseModel):
    """One compared variant: a stored topology, or one call to an agent (stored as a one-stage
    pipeline under a reserved name, so its cells are ordinary executions too)."""

    name: str
    """The topology its cells run (`EvalScore.variant`, `Execution.topology_name`)."""
    kind: Literal["topology", "single-call"]
    agent: str | None = None
    digest: str
    """The team's definition when the eval started: a resume refuses a changed team."""


class EvalSpec(BaseModel):
    """Everything a resume needs, stored on `EvalRun.spec`."""

    samples: list[dict[str, Any]]
    """Each sample: id, input, target, metadata."""
    skipped: list[str] = Field(default_factory=list)
    """The dataset lines skipped with --skip-bad, one line each."""
    source: str
    """Where the samples came from: the file, or `records`."""
    variants: list[VariantSpec]
    scorer: str
    repeat: int = 1
    model: str | None = None
    max_cost_usd: float | None = None
    max_concurrent: int = 8
    max_tokens_per_cell: int | None = None
    max_cost_per_cell: float | None = None
    timeout_seconds: int | None = None
    """Each cell's time limit (a remote caller's is the server's cap)."""
    origin: str = "python"

    @property
    def cells(self) -> int:
        return len(self.samples) * len(self.variants) * self.repeat


_TOKENS = re.compile(r"^\d+$")
_USD = re.compile(r"^\$?(\d+(?:\.\d+)?|\.\d+)\s*(?:usd)?$", re.IGNORECASE)


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """`5000` (tokens) or `0.01usd` / `$0.01` (USD) → (max_tokens, max_cost_usd)."""
    value = text.strip()
    if _TOKENS.fullmatch(value):
        tokens = int(value)
        if tokens < 1:
            raise InvalidConfigError("--budget-per-sample: give at least 1 token, e.g. 5000")
        return tokens, None
    usd = _USD.match(value) if (value.lower().endswith("usd") or value.startswith("$")) else None
    if usd is None:
        raise InvalidConfigError(
            f"--budget-per-sample {text!r}: give tokens (e.g. 5000) or dollars (e.g. 0.01usd or $0.01)"
        )
    dollars = float(usd.group(1))
    if dollars <= 0:  # every cell would fail on its first paid call
        raise InvalidConfigError("--budget-per-sample: give more than $0, e.g. 0.01usd")
    return None, dollars


def reserved_name(kind: str, agent: str) -> str:
    """The stored topology of a single-call baseline or a judge: `single-call-AGENT`, `judge-AGENT`
    (a long agent name is cut and given a hash, so the name stays a valid topology name)."""
    name = f"{kind}-{agent}"
    if len(name) <= 64:
        return name
    return f"{name[:55]}-{hashlib.sha256(agent.encode()).hexdigest()[:8]}"


def team_digest(topology: Topology, agents: Mapping[str, AgentType]) -> str:
    """A hash of a team's definitions: the topology, and each slot's agent."""
    definition = {
        "topology": topology.definition(),
        "agents": {slot: agent.definition() for slot, agent in agents.items()},
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:16]
