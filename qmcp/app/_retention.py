"""Retention: prune old finished executions, from every door, and the schedule `qmcp serve` prunes on.

Pruning deletes history, so it is the operator's: Python and the CLI always may; a remote caller (HTTP)
only on a server started with `--allow-remote-prune` (`CallerPolicy.allow_remote_prune`). What a
prune deletes, keeps and gives back is the store's (`qmcp.agentframework.store.PruneFilter`).

`QMCP_RETENTION` (`RetentionPolicy.parse`) is `AGE[:STATUS,...][:keep-last=N][:topology=NAME][:vacuum]`:
`30d` prunes completed, failed and cancelled runs finished more than 30 days ago; `30d:completed,failed`
only those two statuses; `7d:keep-last=100` keeps each topology's 100 newest whatever their age. The
schedule does not rewrite a SQLite file (`VACUUM` holds the write lock for as long as it takes, and the
server's runs write steps): freed pages are reused, so the file stops growing; `:vacuum` asks for the
rewrite anyway, after each prune that deleted something. An INCREMENTAL file gives its free pages back
either way.
Durations are a whole number and a unit: `s`, `m`, `h`, `d` or `w` (`90m`, `12h`, `2w`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agentframework.errors import InvalidConfigError, PermissionDeniedError
from ..agentframework.models import ExecutionStatus, describe_validation_error
from ..agentframework.store import (
    DEFAULT_PRUNE_STATUSES,
    PRUNABLE_STATUSES,
    Database,
    PruneFilter,
    PruneResult,
)
from ._caller import Caller, CallerPolicy

__all__ = ["PruneReport", "PruneRequest", "RetentionPolicy", "parse_duration", "prune_executions"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d{1,12})\s*([smhdw])")
MAX_DURATION = timedelta(days=36_500)
"""A hundred years: longer ages would overflow a date."""

_DURATION_HELP = "a whole number and a unit s, m, h, d or w (45s, 90m, 12h, 30d, 2w)"


def parse_duration(text: str, name: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s` as a `timedelta`; one line naming `name` for anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidConfigError(f"{name} {text!r} is not a duration: write {_DURATION_HELP}")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidConfigError(f"{name} {text!r} is too long: at most 36500d (a hundred years)")
    return timedelta(seconds=seconds)


def _statuses(names: list[str] | None, name: str) -> frozenset[ExecutionStatus]:
    if names is None:
        return DEFAULT_PRUNE_STATUSES
    chosen = set()
    for raw in names:
        try:
            chosen.add(ExecutionStatus(raw.strip().lower()))
        except ValueError:
            raise InvalidConfigError(
                f"{name}: unknown status {raw!r}; choose among: "
                f"{', '.join(sorted(s.value for s in PRUNABLE_STATUSES))}"
            ) from None
    return frozenset(chosen)


class PruneRequest(BaseModel):
    """Which executions to delete: every condition given must hold. At least `older_than` or
    `keep_last`; running, paused and pending executions and the parents of kept forks always stay."""

    model_config = ConfigDict(extra="forbid")

    older_than: str | None = Field(
        default=None,
        max_length=40,
        description="Finished (else created) longer ago than this duration: 45s, 90m, 12h, 30d, 2w.",
        examples=["30d"],
    )
    statuses: list[str] | None = Field(
        default=None,
        max_length=8,
        description="Only these statuses, among completed, failed, cancelled, interrupted "
        "[default: completed, failed, cancelled].",
    )
    topology: str | None = Field(default=None, max_length=64, description="Only this topology's runs.")
    keep_last: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Keep the N newest executions of each topology (among these statuses), however old.",
    )
    dry_run: bool = Field(default=False, description="Count what would go; delete nothing.")
    vacuum: bool = Field(
        default=True,
        description="SQLite: rewrite the file afterwards (VACUUM) to give the space back; false: no rewrite "
        "(an INCREMENTAL file still gives its free pages back).",
    )

    def filter(self, labels: Mapping[str, str] | None = None) -> PruneFilter:
        """The store's filter, or one line saying what is wrong (`InvalidConfigError`), naming each field
        by its `labels` entry (a door's own spelling: `--older-than`)."""
        label = {name: name for name in type(self).model_fields} | dict(labels or {})
        if self.older_than is None and self.keep_last is None:
            raise InvalidConfigError(
                f"prune needs {label['older_than']} AGE (30d) or {label['keep_last']} N; "
                f"{label['older_than']} 0s prunes every finished execution"
            )
        older = None if self.older_than is None else parse_duration(self.older_than, label["older_than"])
        return PruneFilter(
            older_than=older,
            statuses=_statuses(self.statuses, label["statuses"]),
            topology=self.topology,
            keep_last=self.keep_last,
        )


class PruneReport(BaseModel):
    """What a prune deleted (a dry run: would delete), and the space given back."""

    dry_run: bool
    database: str = Field(description="sqlite or postgresql")
    executions: int
    steps: int
    usage_rows: int
    human_requests: int
    human_responses: int
    eval_scores_detached: int = Field(description="Evaluation scores kept, their execution id cleared.")
    kept_parents: int = Field(description="Executions chosen but kept: a fork of theirs stays.")
    skipped: int = Field(description="Executions kept because they changed (resumed, forked) while pruning.")
    stopped: bool = Field(description="The prune stopped between batches (the server shut down).")
    bytes_before: int | None
    bytes_after: int | None
    bytes_reclaimed: int | None
    compaction: str = Field(description="VACUUM, incremental_vacuum, auto_vacuum, busy, advised or none")
    summary: str = Field(description="One sentence saying what was done and what to do next.")

    @classmethod
    def of(cls, result: PruneResult) -> PruneReport:
        return cls(
            dry_run=result.dry_run,
            database=result.database,
            executions=result.executions,
            steps=result.steps,
            usage_rows=result.usage_rows,
            human_requests=result.human_requests,
            human_responses=result.human_responses,
            eval_scores_detached=result.eval_scores_detached,
            kept_parents=result.kept_parents,
            skipped=result.skipped,
            stopped=result.stopped,
            bytes_before=result.bytes_before,
            bytes_after=result.bytes_after,
            bytes_reclaimed=result.bytes_reclaimed,
            compaction=result.compaction,
            summary=_summary(result),
        )


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - the loop returns at GB


def _summary(result: PruneResult) -> str:
    rows = (
        f"{result.executions} execution(s), {result.steps} step(s), {result.usage_rows} usage row(s), "
        f"{result.human_requests} human request(s)"
    )
    kept = f"; kept {result.kept_parents} that a remaining fork descends from" if result.kept_parents else ""
    if result.skipped:
        kept += f"; kept {result.skipped} that changed while pruning"
    if result.dry_run:
        return f"would delete {rows}{kept}; nothing was deleted (dry run)"
    if not result.executions:
        return f"nothing to delete{kept}" + (
            "; stopped early (the server is shutting down)" if result.stopped else ""
        )
    done = f"deleted {rows}{kept}" + (
        "; stopped early (the server is shutting down)" if result.stopped else ""
    )
    if result.database == "postgresql":
        return (
            f"{done}; the tables take {_size(result.bytes_after)}: PostgreSQL keeps deleted rows' space until "
            "VACUUM, so run plain VACUUM (autovacuum also does it) to make it reusable"
        )
    if result.bytes_before is None:
        return done
    if result.compaction == "busy":
        return (
            f"{done}; the file stays {_size(result.bytes_after)}: other connections held it, so it was not "
            "compacted (new rows reuse the freed space; prune again when it is idle)"
        )
    how = {
        "VACUUM": "after VACUUM",
        "incremental_vacuum": "after incremental_vacuum",
        "auto_vacuum": "(auto_vacuum=FULL shrinks it at each commit)",
    }.get(result.compaction, "(not rewritten: new rows reuse the freed space; VACUUM gives it back)")
    return (
        f"{done}; the file went from {_size(result.bytes_before)} to {_size(result.bytes_after)} {how}: "
        f"{_size(result.bytes_reclaimed)} reclaimed"
    )


async def prune_executions(
    db: Database,
    request: PruneRequest,
    caller: Caller,
    *,
    policy: CallerPolicy | None = None,
    stop: Callable[[], bool] | None = None,
) -> PruneReport:
    """Delete the executions `request` chooses, as `caller` may: the operator always, a remote caller
    only when `policy` allows it (`PermissionDeniedError` otherwise, nothing read or deleted).
    `stop()` is asked between batches (a server shutting down)."""
    if caller.remote and not (policy or CallerPolicy.from_settings()).allow_remote_prune:
        raise PermissionDeniedError(
            "pruning deletes executions, so it is the server's operator's to do; run qmcp executions prune "
            "on the server, or start it with qmcp serve --allow-remote-prune to let clients prune"
        )
    prune = request.filter()
    result = await db.prune(prune, dry_run=request.dry_run, vacuum=request.vacuum, stop=stop)
    return PruneReport.of(result)


@dataclass(frozen=True)
class RetentionPolicy:
    """What `qmcp serve` prunes, every `interval` (`QMCP_RETENTION`, `QMCP_RETENTION_INTERVAL`)."""

    request: PruneRequest
    interval: timedelta

    @classmethod
    def parse(cls, text: str, interval: str = "1h") -> RetentionPolicy | None:
        """The policy `text` spells (grammar in the module), or None for an empty one; one line for a
        wrong one, naming the setting and the form."""
        text = text.strip()
        if not text:
            return None
        form = "the form is AGE[:STATUS,...][:keep-last=N][:topology=NAME][:vacuum], e.g. 30d or 30d:completed,failed"
        age, *parts = text.split(":")
        values: dict[str, Any] = {"vacuum": False}
        try:
            parse_duration(age, "age")
            values["older_than"] = age.strip()
            for part in parts:
                name, equals, value = part.partition("=")
                name = name.strip().lower()
                if equals and name == "keep-last":
                    if not value.strip().isdigit():
                        raise InvalidConfigError(f"keep-last={value} is not a whole number")
                    values["keep_last"] = int(value)
                elif equals and name == "topology":
                    values["topology"] = value.strip()
                elif not equals and name == "vacuum":
                    values["vacuum"] = True
                elif equals:
                    raise InvalidConfigError(
                        f"{name!r} is not a retention option (keep-last, topology, vacuum)"
                    )
                else:
                    values["statuses"] = [s for s in part.split(",") if s.strip()]
            request = PruneRequest(**values)
            request.filter()
        except ValidationError as error:
            raise InvalidConfigError(
                f"QMCP_RETENTION={text!r}: {describe_validation_error(error)}; {form}"
            ) from None
        except InvalidConfigError as error:
            raise InvalidConfigError(f"QMCP_RETENTION={text!r}: {error}; {form}") from None
        every = parse_duration(interval, "QMCP_RETENTION_INTERVAL")
        if every <= timedelta(0):
            raise InvalidConfigError(f"QMCP_RETENTION_INTERVAL {interval!r} must be longer than 0s")
        return cls(request, every)
