"""Debate: proponent and opponent alternate, seeing the transcript; a mediator decides."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import MissingSlotError
from ..models import AgentType, DebateConfig, TopologyType
from ._base import BaseTopology, topology
from ._context import StepContext, input_text
from ._parsing import normalize_answer
from ._plan import AgentCall, StepPlan

__all__ = ["AGREEMENT_MARKER", "DebateTopology"]

AGREEMENT_MARKER = "AGREE:"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["proponent", "opponent", "draw"]},
        "verdict": {"type": "string"},
        "confidence": {"type": "number"},
    },
    "required": ["winner", "verdict"],
}
_VERDICT_FALLBACK = {
    "winner": "draw",
    "verdict": "The mediator's reply could not be read; no winner.",
    "confidence": 0.0,
}


_COPIED_RUN = 4
"""Words in a row that, found in what both sides were given, are the debate's words, not a position."""
_WORD = re.compile(r"\w+")


def _own_words(reply: str, given: str) -> list[str]:
    """The words of `reply` (normalised as answers are compared) outside every run of `_COPIED_RUN`
    or more words that `given` holds too."""
    words = _WORD.findall(normalize_answer(reply))
    source = _WORD.findall(given.lower())
    runs = {tuple(source[i : i + _COPIED_RUN]) for i in range(len(source) - _COPIED_RUN + 1)}
    copied = [False] * len(words)
    for i in range(len(words) - _COPIED_RUN + 1):
        if tuple(words[i : i + _COPIED_RUN]) in runs:
            copied[i : i + _COPIED_RUN] = [True] * _COPIED_RUN
    return [word for word, was_copied in zip(words, copied, strict=True) if not was_copied]


@topology
class DebateTopology(BaseTopology):
    topology_type = TopologyType.DEBATE
    config: DebateConfig
    config_class = DebateConfig

    mediator_key: ClassVar[str] = "debate/mediator"

    @staticmethod
    def turn_key(round_number: int, side: str) -> str:
        """The step key of `side`'s turn ("proponent" or "opponent") in round `round_number` (from 1)."""
        return f"debate/round-{round_number}/{side}"

    def step_plan(self, agents: Mapping[str, AgentType]) -> StepPlan:
        """Every possible turn, unrolled (turns after convergence are skipped), then the mediator."""
        config = self.config
        mediator = self.mediator_slot(agents) if config.consensus_method == "mediator" else None
        calls = []
        for number in range(1, config.max_rounds + 1):
            for side in ("proponent", "opponent"):
                stance = "for" if side == "proponent" else "against"
                skip = (
                    "; skipped once the debate has converged"
                    if number > 1 and config.allow_early_termination
                    else ""
                )
                calls.append(
                    AgentCall(
                        side,
                        self.turn_key(number, side),
                        f"Round {number}: the {side} (agent {agents[side].name!r}) argues {stance} the topic{skip}.",
                        step=f"round_{number}_{side}",
                    )
                )
        if mediator:
            calls.append(
                AgentCall(
                    mediator,
                    self.mediator_key,
                    f"The mediator (agent {agents[mediator].name!r}) decides the debate.",
                    step="mediator",
                )
            )
        decider = "the mediator decides" if mediator else "the last round stands"
        return StepPlan(
            f"up to {config.max_rounds} rounds of proponent and opponent, then {decider}", tuple(calls)
        )

    def mediator_slot(self, agents: Mapping[str, AgentType]) -> str | None:
        """The slot of `mediator_agent_name`, else the `mediator` slot, if any."""
        if self.config.mediator_agent_name:
            for slot, agent in agents.items():
                if agent.name == self.config.mediator_agent_name:
                    return slot
            raise MissingSlotError(
                f"mediator_agent_name {self.config.mediator_agent_name!r} is not an agent of this topology"
            )
        return "mediator" if "mediator" in agents else None

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        slots = list(agents)
        self.require(slots, "proponent", "opponent")
        if (
            self.config.consensus_method == "mediator"
            and not self.config.mediator_agent_name
            and "mediator" not in slots
        ):
            raise MissingSlotError(
                "consensus_method 'mediator' needs an agent in slot 'mediator' (or mediator_agent_name)"
            )

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        topic = input_text(input_data)
        transcript: list[dict[str, Any]] = []
        converged = False
        rounds = 0
        for round_number in range(1, self.config.max_rounds + 1):
            rounds = round_number
            texts = {}
            for side in ("proponent", "opponent"):
                prompt = self._turn_prompt(topic, side, round_number, transcript)
                result = await ctx.invoke(side, prompt, key=self.turn_key(round_number, side))
                texts[side] = result.text
                transcript.append(
                    {"round": round_number, "side": side, "agent": result.agent_name, "text": result.text}
                )
            if self.config.allow_early_termination and self._converged(
                texts["proponent"], texts["opponent"], topic, round_number
            ):
                converged = True
                break
        output: dict[str, Any] = {"rounds": rounds, "converged": converged, "transcript": transcript}
        mediator = self.mediator_slot(ctx.agents)
        if self.config.consensus_method == "mediator" and mediator is not None:
            decision = await ctx.invoke(
                mediator,
                self._mediator_prompt(topic, transcript, converged),
                key=self.mediator_key,
                schema=VERDICT_SCHEMA,
                fallback=_VERDICT_FALLBACK,
            )
            data = decision.data or {}
            output |= {
                "winner": data.get("winner"),
                "verdict": data.get("verdict"),
                "confidence": data.get("confidence"),
                "mediator": decision.agent_name,
                "mediator_fallback": decision.fallback,
            }
        else:
            last = {t["side"]: t["text"] for t in transcript[-2:]}
            output |= {
                "winner": "draw" if converged else None,
                "verdict": last["proponent"]
                if converged
                else f"Proponent: {last['proponent']}\n\nOpponent: {last['opponent']}",
                "confidence": None,
            }
        return output

    def _converged(self, proponent: str, opponent: str, topic: str, round_number: int) -> bool:
        """Whether the round ends the debate: a side concedes (its reply starts with `AGREE:`), or both
        sides state the same position.

        A side's position is what it says in its own words: its reply without the confidence line and
        without every run of `_COPIED_RUN` or more words that the debate gave both sides (the topic and
        the turn's instructions). The positions agree when both say something and their words are at
        least `convergence_threshold` alike (difflib's ratio). Two sides that only repeat the topic, or
        differ only in their stance around it, have not converged."""
        if proponent.lstrip().upper().startswith(AGREEMENT_MARKER) or opponent.lstrip().upper().startswith(
            AGREEMENT_MARKER
        ):
            return True
        given = "\n".join(
            self._turn_prompt(topic, side, round_number, []) for side in ("proponent", "opponent")
        )
        mine, theirs = (_own_words(text, given) for text in (proponent, opponent))
        if not mine or not theirs:
            return False
        similarity = difflib.SequenceMatcher(None, mine, theirs, autojunk=False).ratio()
        return similarity >= self.config.convergence_threshold

    @staticmethod
    def _turn_prompt(topic: str, side: str, round_number: int, transcript: list[dict[str, Any]]) -> str:
        stance = "for" if side == "proponent" else "against"
        history = "\n\n".join(f"[round {t['round']}, {t['side']}] {t['text']}" for t in transcript)
        lines = [f"Debate topic: {topic}", f"You argue {stance} it. This is round {round_number}."]
        if history:
            lines.append(f"Transcript so far:\n{history}")
        lines.append(
            "Make your strongest argument and answer the other side. If you have come to agree with the other side, "
            f"start your reply with '{AGREEMENT_MARKER}'."
        )
        return "\n\n".join(lines)

    @staticmethod
    def _mediator_prompt(topic: str, transcript: list[dict[str, Any]], converged: bool) -> str:
        history = "\n\n".join(f"[round {t['round']}, {t['side']}] {t['text']}" for t in transcript)
        state = "The debaters converged." if converged else "The debaters did not converge."
        return (
            f"Debate topic: {topic}\n\nTranscript:\n{history}\n\n{state} As mediator, decide which side argued better "
            "(or a draw) and state the verdict the debate supports."
        )
