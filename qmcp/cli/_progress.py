"""Progress of a running topology: a live table on a terminal, plain lines on stderr otherwise.

The runner reports each step through `StepEvent`s; `RunDisplay` is the `on_event` callback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from ._output import count, format_cost, format_tokens, stdout

if TYPE_CHECKING:
    from rich.live import Live

    from qmcp.agentframework.topologies import StepEvent

__all__ = ["DisplayMode", "RunDisplay"]


class DisplayMode(StrEnum):
    LIVE = "live"
    PLAIN = "plain"
    SILENT = "silent"

    @classmethod
    def choose(cls, *, json_output: bool, quiet: bool) -> DisplayMode:
        """Silent for `--format json` (stdout holds one document) and `--quiet`; live only on a terminal."""
        if json_output or quiet:
            return cls.SILENT
        return cls.LIVE if sys.stdout.isatty() else cls.PLAIN


@dataclass
class _SlotProgress:
    agent: str
    model: str
    done: int = 0
    running: int = 0
    replayed: int = 0
    failed: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class RunDisplay:
    """Counts steps per slot from the runner's events and shows them as they happen."""

    def __init__(
        self, mode: DisplayMode, title: str, slots: Mapping[str, tuple[str, str]], *, stream: bool = False
    ) -> None:
        """`slots` maps each slot to its (agent name, model), in order, so idle slots show too.
        `stream`: show the running step's text as the model writes it (`--stream`)."""
        self.mode = mode
        self.title = title
        self.stream = stream
        self._texts: dict[str, list[str]] = {}  # the text so far of each step in flight
        self._writing: str | None = None  # the step whose text plain mode is printing
        self.slots = {slot: _SlotProgress(agent, model) for slot, (agent, model) in slots.items()}
        self._started: float | None = None
        """When the run's first step event came: times count from the run's start, not from the
        CLI's (which spends its first seconds importing and opening the database)."""
        self._live: Live | None = None

    def __enter__(self) -> RunDisplay:
        if self.mode is DisplayMode.LIVE:
            from rich.live import Live

            self._live = Live(self, console=stdout(), refresh_per_second=8)
            self._live.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    @property
    def steps_done(self) -> int:
        return sum(s.done + s.replayed for s in list(self.slots.values()))

    def _elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    def __call__(self, event: StepEvent) -> None:
        if self._started is None:
            self._started = time.monotonic()
        if event.kind == "delta":
            self._delta(event)
            return
        if event.kind in ("completed", "failed", "retry"):
            self._texts.pop(event.key, None)
            if self._writing == event.key and self.mode is DisplayMode.PLAIN:
                sys.stderr.write("\n")
                self._writing = None
        slot = self.slots.setdefault(event.slot, _SlotProgress(event.agent_name, event.model))
        slot.model = event.model
        if event.kind == "started":
            slot.running += 1
        elif event.kind == "retry":
            slot.retries += 1
        elif event.kind == "replayed":
            slot.replayed += 1
        elif event.kind == "completed":
            slot.running = max(0, slot.running - 1)
            slot.done += 1
            slot.input_tokens += event.usage.input_tokens
            slot.output_tokens += event.usage.output_tokens
            slot.cost_usd += event.usage.cost_usd
        elif event.kind == "failed":
            slot.running = max(0, slot.running - 1)
            slot.failed += 1
        if self.mode is DisplayMode.PLAIN:
            self._line(event)

    def _delta(self, event: StepEvent) -> None:
        if not self.stream or self.mode is DisplayMode.SILENT:
            return
        self._texts.setdefault(event.key, []).append(event.text)
        if self.mode is DisplayMode.PLAIN:
            if self._writing != event.key:
                if self._writing is not None:
                    sys.stderr.write("\n")
                sys.stderr.write(f"--- {event.key} ({event.slot}) ---\n")
                self._writing = event.key
            sys.stderr.write(event.text)
            sys.stderr.flush()

    def _line(self, event: StepEvent) -> None:
        detail = ""
        if event.kind == "completed":
            used = event.usage
            detail = f"  {format_tokens(used.input_tokens, used.output_tokens)}  {format_cost(used.cost_usd)}"
        elif event.error:
            detail = f"  {event.error}"
        elapsed = self._elapsed()
        sys.stderr.write(
            f"{elapsed:7.1f}s  {event.kind:<9}  {event.key}  "
            f"({event.slot}: {event.agent_name} on {event.model}){detail}\n"
        )
        sys.stderr.flush()

    def __rich__(self) -> Any:
        """The live table, re-rendered on every refresh so the clock moves."""
        clock = "starting" if self._started is None else f"{self._elapsed():.1f} s"
        table = Table(
            title=f"[bold]{escape(self.title)}[/bold] · {clock}",
            title_justify="left",
            header_style="bold",
        )
        for column in ("Slot", "Agent", "Model", "Done", "Running", "Tokens", "Cost"):
            table.add_column(column, justify="right" if column in ("Done", "Running", "Cost") else "left")
        slots = list(self.slots.items())  # a copy: events arrive on the loop thread while this renders
        for name, slot in slots:
            done = str(slot.done + slot.replayed)
            if slot.replayed:
                done += f" ({slot.replayed} replayed)"
            if slot.failed:
                done += f" [red]{slot.failed} failed[/red]"
            running = "[yellow]●[/yellow]" * slot.running if slot.running else ""
            if slot.retries:
                running += f" {slot.retries} retries"
            table.add_row(
                escape(name),
                escape(slot.agent),
                escape(slot.model),
                done,
                running,
                format_tokens(slot.input_tokens, slot.output_tokens),
                format_cost(slot.cost_usd),
            )
        totals = [slot for _, slot in slots]
        finished, in_flight = sum(s.done + s.replayed for s in totals), sum(s.running for s in totals)
        table.caption = (
            f"{count(finished, 'step')} done · {in_flight} running · "
            f"{format_tokens(sum(s.input_tokens for s in totals), sum(s.output_tokens for s in totals))} · "
            f"{format_cost(sum(s.cost_usd for s in totals))}"
        )
        table.caption_justify = "left"
        texts = list(self._texts.items())
        if not texts:
            return table
        from rich.console import Group
        from rich.panel import Panel

        key, pieces = texts[-1]  # the step that started writing last
        lines = "".join(pieces).splitlines()[-12:]
        return Group(table, Panel(escape("\n".join(lines)), title=escape(key), title_align="left"))
