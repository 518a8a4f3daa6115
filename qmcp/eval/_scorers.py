"""Scorers: how an answer is compared with a sample's target, each from a one-word spec (`--scorer`).

| spec | a score of 1 when |
|---|---|
| `exact` | the answer equals the target once both are normalised (case, surrounding whitespace and punctuation, inner whitespace) |
| `includes` | the normalised answer contains the normalised target |
| `regex:PAT` | `PAT` is found in the answer (Python `re.search`) |
| `number`, `number:TOL` | the last number in the answer equals the target, within `TOL` (absolute, or relative with `%`) |
| `choice` | the A–E letter the answer chooses (`Answer: (C)`, `c)`, `The answer is C.`) is the target's |
| `json:PATH` | the JSON in the answer (bare or fenced) holds the target at `PATH` (`a.b[0]`; `$` is the whole) |
| `judge:AGENT` | the stored agent, asked with a rubric, says the answer is correct (or gives a score) |
| `python:module:func` | `func(sample, answer)` says so (a `Score`, a number 0..1 or a bool; sync or async) |

A list target is any of its answers. A sample that cannot be scored (no target for a scorer that
needs one, a judge that gives no verdict, a `python:` scorer that fails) raises `ScoreError`: that
is not a wrong answer, and the engine records no score for it, with the message.

`python:` scorers import and run code, so they are trusted like Python tools: the operator names
them (the CLI, Python), a remote caller never (`check_scorer_allowed`). A remote caller names no
`regex:` either: Python's `re` has no time limit, and one pattern can hold the process for hours.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..agentframework.errors import InvalidConfigError, PermissionDeniedError, UserInputError, did_you_mean
from ..agentframework.models import check_name
from ._dataset import Sample, format_number

if TYPE_CHECKING:
    from ..app import Caller

__all__ = [
    "SCORER_KINDS",
    "Judge",
    "Score",
    "ScoreError",
    "Scorer",
    "check_scorable",
    "check_scorer_allowed",
    "extract_choice",
    "extract_number",
    "judge_agent",
    "judge_prompt",
    "normalize_answer",
    "parse_scorer",
    "parse_verdict",
]

SCORER_KINDS = (
    "exact",
    "includes",
    "regex:PAT",
    "number[:TOL]",
    "choice",
    "json:PATH",
    "judge:AGENT",
    "python:module:func",
)
"""Every scorer spec, as help texts list them."""

_MAX_EXPLANATION = 300
_SCANNED = 10_000
"""How much of an answer's end the number and choice extractors read: what they look for is at the end."""
_MAX_PATTERN = 1000


class ScoreError(UserInputError):
    """The sample could not be scored (not a wrong answer): the message says why, in one line."""


@dataclass(frozen=True)
class Score:
    """How well one answer did, 0..1, and why in one line."""

    value: float
    explanation: str

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ValueError(f"a score is a number from 0 to 1, not {self.value!r}")
        if not (math.isfinite(self.value) and 0 <= self.value <= 1):
            raise ValueError(f"a score is a number from 0 to 1, not {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "explanation", _one_line(self.explanation, _MAX_EXPLANATION))


Judge = Callable[[str, str], Awaitable[str]]
"""(agent name, prompt) -> the agent's reply: how `judge:AGENT` asks its agent. The engine gives one
that runs the call as a durable, counted step of the sample's execution."""


class Scorer(Protocol):
    """Scores one answer to one sample."""

    @property
    def spec(self) -> str:
        """The string the scorer was parsed from (`parse_scorer`)."""

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score: ...


def parse_scorer(spec: str) -> Scorer:
    """The scorer a spec names (`SCORER_KINDS`), or a one-line `InvalidConfigError`.

    A `python:` spec imports its module here: check a remote caller's spec with
    `check_scorer_allowed` first."""
    kind, colon, argument = spec.strip().partition(":")
    kind = kind.strip().lower()
    simple: dict[str, Callable[[str], Scorer]] = {
        "exact": _ExactScorer,
        "includes": _IncludesScorer,
        "choice": _ChoiceScorer,
    }
    if kind in simple:
        if colon:
            raise InvalidConfigError(f"scorer {spec!r}: {kind!r} takes no argument; write just {kind!r}")
        return simple[kind](spec)
    if kind == "number":
        return _NumberScorer.parse(spec, argument if colon else None)
    parsers: dict[str, Callable[[str, str], Scorer]] = {
        "regex": _RegexScorer.parse,
        "json": _JsonScorer.parse,
        "judge": _JudgeScorer.parse,
        "python": _PythonScorer.parse,
    }
    if kind in parsers:
        if not argument.strip():
            usage = next(k for k in SCORER_KINDS if k.startswith(kind))
            raise InvalidConfigError(f"scorer {spec!r}: {kind!r} needs an argument; write {usage!r}")
        return parsers[kind](spec, argument)
    names = [k.split(":")[0].split("[")[0] for k in SCORER_KINDS]
    raise InvalidConfigError(
        f"unknown scorer {spec!r}; {did_you_mean(kind, names)}choose one of: {', '.join(SCORER_KINDS)}"
    )


_OPERATOR_ONLY = {
    "python": "runs Python code on the server's machine",
    "regex": "runs a pattern with no time limit in the server's process (a pattern such as (a+)+$ can take "
    "hours on a short answer)",
}
"""The scorers only the operator names, and why: what they would let a remote caller do."""


def check_scorer_allowed(spec: str, caller: Caller) -> None:
    """Refuse (`PermissionDeniedError`) a scorer `caller` may not name, before anything is imported or
    compiled: a `python:` scorer imports and runs code on this machine, which only the operator
    decides, as for Python tools; a `regex:` pattern can take unbounded time (Python's `re` has no
    limit), which only the operator may risk."""
    kind = spec.strip().partition(":")[0].strip().lower()
    if kind in _OPERATOR_ONLY and caller.remote:
        raise PermissionDeniedError(
            f"scorer {_one_line(spec, 80)!r} {_OPERATOR_ONLY[kind]}, which only its operator decides; "
            "choose another scorer (exact, includes, number[:TOL], choice, json:PATH, judge:AGENT)"
        )


def check_scorable(scorer: Scorer, samples: Iterable[Sample]) -> None:
    """Refuse (`ScoreError`, one line) samples `scorer` cannot score: no target where it needs one, a
    target that is no number for `number`, no letter for `choice`. An eval checks this before it
    spends anything, rather than learn it from the first answer."""
    problems: list[str] = []
    total = 0
    check = getattr(scorer, "check", None)  # the built-in scorers have one; a scorer of your own may not
    for sample in samples:
        total += 1
        if check is None:
            continue
        try:
            check(sample)
        except ScoreError as error:
            problems.append(str(error))
    if problems:
        some = f"{len(problems)} of {total} samples" if len(problems) > 1 else "a sample"
        raise ScoreError(
            f"{some} cannot be scored by {scorer.spec!r}, the first: {problems[0]}; "
            "fix the targets or choose another scorer"
        )


def judge_agent(scorer: Scorer) -> str | None:
    """The agent a `judge:AGENT` scorer asks (the engine loads it, checks its trust, counts its calls);
    None for other scorers."""
    return scorer.agent if isinstance(scorer, _JudgeScorer) else None


# -- text helpers ------------------------------------------------------------------------------------

_EDGES = " \t\r\n\f\v.,;:!?'\"`()[]{}*_\u00a0\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026"


def normalize_answer(text: str) -> str:
    """`text` as `exact` and `includes` compare it: NFKC, case-folded, inner whitespace collapsed,
    surrounding whitespace and punctuation (not signs, `$` or `%`) removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(_EDGES)


def _one_line(text: str, limit: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _quoted(text: str, limit: int = 60) -> str:
    return repr(_one_line(text, limit))


def _targets(sample: Sample, scorer: str) -> list[str | float]:
    """The sample's acceptable answers, or a `ScoreError` when it has none."""
    target = sample.target
    if target is None:
        raise ScoreError(f"sample {sample.id!r} has no target; the {scorer!r} scorer compares against one")
    return list(target) if isinstance(target, list) else [target]


def _expected(options: Sequence[str | float]) -> str:
    shown = [format_number(o) if isinstance(o, float) else _quoted(o) for o in options]
    return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)


# -- exact, includes, regex --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExactScorer:
    spec: str

    def check(self, sample: Sample) -> None:
        _targets(sample, "exact")

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        options = _targets(sample, "exact")
        got = normalize_answer(answer)
        number = _whole_number(got)
        for option in options:
            if isinstance(option, float):
                if number is not None and math.isclose(number, option, rel_tol=1e-9, abs_tol=1e-12):
                    return Score(1.0, f"equals {format_number(option)}")
            elif got == normalize_answer(option):
                return Score(1.0, f"equals {_quoted(option)}")
        return Score(0.0, f"expected {_expected(options)}, got {_quoted(answer)}")


@dataclass(frozen=True)
class _IncludesScorer:
    spec: str

    def check(self, sample: Sample) -> None:
        _targets(sample, "includes")

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        options = _targets(sample, "includes")
        got = normalize_answer(answer)
        for option in options:
            text = format_number(option) if isinstance(option, float) else option
            if normalize_answer(text) in got:
                return Score(1.0, f"the answer includes {_quoted(text)}")
        return Score(0.0, f"the answer includes none of {_expected(options)}")


@dataclass(frozen=True)
class _RegexScorer:
    spec: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, spec: str, argument: str) -> _RegexScorer:
        if len(argument) > _MAX_PATTERN:
            raise InvalidConfigError(
                f"scorer regex: the pattern is over {_MAX_PATTERN} characters; shorten it"
            )
        try:
            return cls(spec, re.compile(argument))
        except re.error as error:
            raise InvalidConfigError(f"scorer {spec!r}: not a valid regular expression ({error})") from None

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        found = self.pattern.search(answer)
        if found:
            return Score(1.0, f"/{self.pattern.pattern}/ matched {_quoted(found.group(0))}")
        return Score(0.0, f"/{self.pattern.pattern}/ not found in {_quoted(answer)}")


# -- number ------------------------------------------------------------------------------------------

# A run of digits, commas and dots (one quantifier: linear on any answer), read as one number when it
# is one (`1,234.5`), else as its last plain part (`1,2,3` -> 3).
_NUMBER_RUN = re.compile(r"(?<![\w.])[-+\u2212]?\.?\d[\d,.]*(?:[eE][-+]?\d+)?")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_PART = re.compile(r"\d+(?:\.\d+)?")


def _run_value(run: str) -> float | None:
    text = run.replace("\u2212", "-").rstrip(",.")
    if not _PLAIN_NUMBER.fullmatch(text):
        parts = _PART.findall(text)
        text = parts[-1] if parts else ""
    value = float(text.replace(",", "")) if text else math.nan
    return value if math.isfinite(value) else None


def _numbers(text: str) -> list[float]:
    values = (_run_value(run) for run in _NUMBER_RUN.findall(unicodedata.normalize("NFKC", text)))
    return [value for value in values if value is not None]


def extract_number(answer: str) -> float | None:
    """The last number written in `answer` (`1,234.5`, `-3`, `.5`, `2e3`; a `$` or unit around it is
    ignored), or None. Only the answer's last `_SCANNED` characters are read."""
    numbers = _numbers(answer[-_SCANNED:])
    return numbers[-1] if numbers else None


def _text_number(text: str) -> float | None:
    """The one number a text target holds (`42`, `1,000`, `42 km`, `$5`), or None."""
    numbers = _numbers(text)
    return numbers[0] if len(numbers) == 1 else None


def _whole_number(text: str) -> float | None:
    """The number `text` is, if it is nothing else."""
    stripped = unicodedata.normalize("NFKC", text).strip().replace("\u2212", "-")
    return _run_value(stripped) if _PLAIN_NUMBER.fullmatch(stripped) else None


@dataclass(frozen=True)
class _NumberScorer:
    spec: str
    tolerance: float = 0.0
    relative: bool = False

    @classmethod
    def parse(cls, spec: str, argument: str | None) -> _NumberScorer:
        if argument is None:
            return cls(spec)
        text = argument.strip()
        relative = text.endswith("%")
        try:
            tolerance = float(text.removesuffix("%"))
        except ValueError:
            tolerance = math.nan
        if not math.isfinite(tolerance) or tolerance < 0:
            raise InvalidConfigError(
                f"scorer {spec!r}: the tolerance {argument!r} is not a number 0 or more; "
                "write number:0.01 (absolute) or number:1% (relative)"
            )
        return cls(spec, tolerance / 100 if relative else tolerance, relative)

    def _close(self, got: float, expected: float) -> bool:
        allowed = self.tolerance * abs(expected) if self.relative else self.tolerance
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12) or abs(got - expected) <= allowed

    def _tolerance_text(self) -> str:
        if not self.tolerance:
            return ""
        shown = format_number(self.tolerance * 100) + "%" if self.relative else format_number(self.tolerance)
        return f" (tolerance {shown})"

    def check(self, sample: Sample) -> None:
        self._expected(sample)

    def _expected(self, sample: Sample) -> list[float]:
        expected: list[float] = []
        for option in _targets(sample, "number"):
            value = option if isinstance(option, float) else _text_number(option)
            if value is None:
                raise ScoreError(
                    f"sample {sample.id!r}: target {option!r} is not a number; the 'number' scorer needs one"
                )
            expected.append(value)
        return expected

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        expected = self._expected(sample)
        shown = " or ".join(format_number(v) for v in expected)
        got = extract_number(answer)
        if got is None:
            return Score(0.0, f"expected {shown}, the answer holds no number: {_quoted(answer)}")
        verdict = 1.0 if any(self._close(got, value) for value in expected) else 0.0
        return Score(verdict, f"expected {shown}, got {format_number(got)}{self._tolerance_text()}")


# -- choice ------------------------------------------------------------------------------------------

# No two unbounded quantifiers may compete for the same characters: the patterns stay linear on
# any answer (a run of spaces after "answer" took 34 s at 400 spaces with the first version).
_CHOICE_PHRASES = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be))?\s*(?:[:=]\s*)?(?:(?:option|choice)\s+)?"
    r"[*_]*(?:(?P<open>[(\[])[*_]*)?(?P<letter>[a-e])[*_]*(?P<close>[)\]])?(?![\w'])",
    re.IGNORECASE,
)
_CHOICE_LINE = re.compile(r"[*_]*(?:[(\[] ?)?([a-e]) ?[)\].:]?[*_]*", re.IGNORECASE)
_CHOICE_OPENING = re.compile(r"\s*[(\[]?([A-Ea-e])[)\].:](?:\s|$)")
_CHOICE_BRACKETED = re.compile(r"[(\[]([A-E])[)\]]")
_SENTENCE_GOES_ON = re.compile(r"\s+\w")


def _chosen(found: re.Match[str], text: str) -> bool:
    """A phrase's letter is a choice when it is a capital, bracketed, or ends the sentence: "the answer
    is a prime" names no choice."""
    letter = found.group("letter")
    return bool(
        letter.isupper()
        or found.group("open")
        or found.group("close")
        or not _SENTENCE_GOES_ON.match(text, found.end())
    )


def extract_choice(answer: str) -> str | None:
    """The A–E letter `answer` chooses, upper-case, or None. In order: the last "answer/option/choice
    (is) X" phrase; a line that is only the letter (`C`, `(c)`, `c)`, `C.`); an answer opening with
    `C)` or `C.`; the last `(C)` in the text."""
    text = unicodedata.normalize("NFKC", answer[-_SCANNED:])
    phrases = [found for found in _CHOICE_PHRASES.finditer(text) if _chosen(found, text)]
    if phrases:
        return phrases[-1].group("letter").upper()
    for line in reversed(text.splitlines()):
        found = _CHOICE_LINE.fullmatch(line.strip())
        if found:
            return found.group(1).upper()
    opening = _CHOICE_OPENING.match(text)
    if opening:
        return opening.group(1).upper()
    bracketed = _CHOICE_BRACKETED.findall(text)
    return str(bracketed[-1]) if bracketed else None


@dataclass(frozen=True)
class _ChoiceScorer:
    spec: str

    def check(self, sample: Sample) -> None:
        self._expected(sample)

    def _expected(self, sample: Sample) -> list[str]:
        expected: list[str] = []
        for option in _targets(sample, "choice"):
            letter = extract_choice(option) if isinstance(option, str) else None
            if letter is None:
                raise ScoreError(
                    f"sample {sample.id!r}: target {option!r} is not a choice letter A-E; "
                    "the 'choice' scorer needs one"
                )
            expected.append(letter)
        return expected

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        expected = self._expected(sample)
        shown = " or ".join(expected)
        got = extract_choice(answer)
        if got is None:
            return Score(0.0, f"expected {shown}, found no choice letter (A-E) in {_quoted(answer)}")
        return Score(1.0 if got in expected else 0.0, f"expected {shown}, got {got}")


# -- json:PATH ---------------------------------------------------------------------------------------

_PATH_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_JSON_STARTS = 200
_MISSING = object()


def _parse_path(spec: str, text: str) -> tuple[str | int, ...]:
    path = text.strip()
    rest = path[1:] if path.startswith("$") else path
    segments: list[str | int] = []
    position = 0
    while position < len(rest):
        found = _PATH_SEGMENT.match(rest, position)
        if found is None or (found.group(1) is not None and position and rest[position] != "."):
            raise InvalidConfigError(
                f"scorer {spec!r}: cannot read the path at {rest[position:]!r}; write names with dots and "
                "list indexes in brackets, e.g. json:answer.items[0].name ($ is the whole JSON)"
            )
        segments.append(found.group(1) if found.group(1) is not None else int(found.group(2)))
        position = found.end()
    return tuple(segments)


def _path_text(path: Sequence[str | int]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).removeprefix(".")
    return text or "$"


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING


def _first_json(answer: str) -> Any:
    """The JSON value in `answer`, tolerantly: the whole answer, else the first fenced block
    (```json ... ```) that parses, else the first object or array in the text that parses; else
    `_MISSING` (a JSON `null` is a value)."""
    whole = _loads(answer.strip())
    if whole is not _MISSING:
        return whole
    for block in _FENCE.findall(answer):
        value = _loads(block.strip())
        if value is not _MISSING:
            return value
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(answer) if ch in "{["][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            return decoder.raw_decode(answer, start)[0]
        except (ValueError, RecursionError):
            continue
    return _MISSING


def _at(value: Any, path: Sequence[str | int]) -> tuple[Any, str | None]:
    """The value at `path`, or `_MISSING` and where the path stops."""
    for depth, segment in enumerate(path):
        here = _path_text(path[:depth]) if depth else "$"
        if isinstance(segment, int):
            if not isinstance(value, list):
                return _MISSING, f"{here} is not a list"
            if not -len(value) <= segment < len(value):
                return _MISSING, f"{here} has {len(value)} items"
            value = value[segment]
        elif isinstance(value, dict):
            if segment not in value:
                return _MISSING, f"{here} has no key {segment!r}"
            value = value[segment]
        elif isinstance(value, list) and segment.lstrip("-").isdigit():
            index = int(segment)
            if not -len(value) <= index < len(value):
                return _MISSING, f"{here} has {len(value)} items"
            value = value[index]
        else:
            return _MISSING, f"{here} is not an object"
    return value, None


def _json_equal(got: Any, expected: Any) -> bool:
    if isinstance(got, bool) or isinstance(expected, bool):
        return isinstance(got, bool) and isinstance(expected, bool) and got == expected
    if isinstance(got, int | float) and isinstance(expected, int | float):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_json_equal(got[k], expected[k]) for k in got)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(
            _json_equal(g, e) for g, e in zip(got, expected, strict=True)
        )
    return type(got) is type(expected) and bool(got == expected)


def _json_target(option: str | float) -> Any:
    """A target as a JSON value: a number as is; text that parses as JSON as that value, else the text."""
    if isinstance(option, float):
        return option
    value = _loads(option)
    return option if value is _MISSING else value


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    return _one_line(json.dumps(value, ensure_ascii=False), 60)


@dataclass(frozen=True)
class _JsonScorer:
    spec: str
    path: tuple[str | int, ...]

    @classmethod
    def parse(cls, spec: str, argument: str) -> _JsonScorer:
        return cls(spec, _parse_path(spec, argument))

    def check(self, sample: Sample) -> None:
        _targets(sample, "json")

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        expected = [_json_target(option) for option in _targets(sample, "json")]
        shown = " or ".join(_shown(e) for e in expected)
        where = _path_text(self.path)
        document = _first_json(answer)
        if document is _MISSING:
            return Score(0.0, f"expected {shown} at {where}, found no JSON in {_quoted(answer)}")
        got, missing = _at(document, self.path)
        if missing is not None:
            return Score(0.0, f"expected {shown} at {where}, but {missing}")
        verdict = 1.0 if any(_json_equal(got, e) for e in expected) else 0.0
        return Score(verdict, f"expected {shown} at {where}, got {_shown(got)}")


# -- judge:AGENT -------------------------------------------------------------------------------------

_RUBRIC = """You are grading an answer to a task. Judge only whether the answer is correct{against}.

<task>
{task}
</task>
{reference}
<answer>
{answer}
</answer>

Reply with one line: "VERDICT: CORRECT" or "VERDICT: INCORRECT" (or "SCORE: x" with x from 0 to 1 \
for partial credit), then one sentence saying why."""

_VERDICT = re.compile(
    r"verdict\s*(?:[:=]\s*)?(?:\*+\s*)?(incorrect|correct|partial|wrong|right|pass|fail)", re.I
)
_SCORE = re.compile(
    r"score\s*(?:[:=]\s*)?(?:\*+\s*)?(\d+(?:\.\d+)?)(?:\s*(/|out\s+of)\s*(\d+(?:\.\d+)?))?", re.I
)
_LEADING = re.compile(r"^\W*(incorrect|correct|wrong|right|yes|no|pass|fail)\b", re.I)
_WORDS = {
    "correct": 1.0,
    "right": 1.0,
    "yes": 1.0,
    "pass": 1.0,
    "partial": 0.5,
    "incorrect": 0.0,
    "wrong": 0.0,
    "no": 0.0,
    "fail": 0.0,
}


def judge_prompt(sample: Sample, answer: str) -> str:
    """The rubric the judge agent is asked with: the task, the reference answer(s) if any, the answer."""
    prompt = sample.input.get("prompt")
    task = prompt if set(sample.input) == {"prompt"} and isinstance(prompt, str) else None
    if task is None:
        task = json.dumps(sample.input, ensure_ascii=False, indent=2)
    reference = against = ""
    if sample.target is not None:
        options = sample.target if isinstance(sample.target, list) else [sample.target]
        texts = [format_number(o) if isinstance(o, float) else o for o in options]
        if len(texts) == 1:
            reference, against = f"<reference>\n{texts[0]}\n</reference>\n", " against the reference"
        else:
            listed = "\n".join(texts)
            reference = f"<acceptable_answers>\n{listed}\n</acceptable_answers>\n"
            against = " (any one of the acceptable answers is correct)"
    return _RUBRIC.format(task=task, reference=reference, answer=answer, against=against)


def parse_verdict(reply: str) -> float | None:
    """The score a judge's reply gives: `VERDICT: CORRECT` 1, `INCORRECT` 0, `PARTIAL` 0.5,
    `SCORE: 0.7` or `SCORE: 7/10`, or a reply opening with correct/incorrect, yes/no; else None."""
    verdicts = _VERDICT.findall(reply)
    if verdicts:
        return _WORDS[str(verdicts[-1]).lower()]
    scores = _SCORE.findall(reply)
    if scores:
        number, by, scale = scores[-1]
        value = float(number) / float(scale) if by and float(scale) else float(number)
        return value if 0 <= value <= 1 else None
    leading = _LEADING.match(reply)
    return _WORDS[leading.group(1).lower()] if leading else None


@dataclass(frozen=True)
class _JudgeScorer:
    spec: str
    agent: str

    @classmethod
    def parse(cls, spec: str, argument: str) -> _JudgeScorer:
        agent = argument.strip()
        try:
            check_name(agent, "agent")
        except ValueError as error:
            raise InvalidConfigError(f"scorer {spec!r}: {error}") from None
        return cls(spec, agent)

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        if judge is None:
            raise ScoreError(
                f"scorer {self.spec!r} asks agent {self.agent!r} to judge, but no judge was given; "
                "run it through qmcp eval, or pass judge= to score()"
            )
        reply = await judge(self.agent, judge_prompt(sample, answer))
        value = parse_verdict(reply)
        if value is None:
            raise ScoreError(f"judge {self.agent!r} gave no verdict: {_quoted(reply, 120)}")
        return Score(value, f"judge {self.agent}: {_one_line(reply, 200)}")


# -- python:module:func ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PythonScorer:
    spec: str
    reference: str
    function: Callable[..., Any]

    @classmethod
    def parse(cls, spec: str, argument: str) -> _PythonScorer:
        reference = argument.strip()
        module_name, colon, attribute = reference.partition(":")
        if not colon or not module_name or not attribute:
            raise InvalidConfigError(f"scorer {spec!r}: write python:package.module:function")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as error:
            raise InvalidConfigError(
                f"scorer {spec!r}: cannot import {module_name!r} ({error}); put its directory on PYTHONPATH"
            ) from None
        try:
            for part in attribute.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise InvalidConfigError(
                f"scorer {spec!r}: module {module_name!r} has no {attribute!r}"
            ) from None
        if not callable(target):
            raise InvalidConfigError(f"scorer {spec!r}: {reference!r} is not a function")
        try:
            inspect.signature(target).bind(None, None)
        except TypeError:
            raise InvalidConfigError(
                f"scorer {spec!r}: {reference!r} must take (sample, answer) and return a Score, a number or a bool"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): the call will tell
            pass
        return cls(spec, reference, target)

    async def score(self, sample: Sample, answer: str, judge: Judge | None = None) -> Score:
        try:
            result = self.function(sample, answer)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:  # the user's code: its failure is this sample's, told in one line
            raise ScoreError(
                f"scorer {self.reference} failed on sample {sample.id!r}: {type(error).__name__}: {error}"
            ) from error
        if isinstance(result, Score):
            return result
        if isinstance(result, bool):
            return Score(float(result), f"{self.reference} returned {result}")
        if isinstance(result, int | float) and math.isfinite(result) and 0 <= result <= 1:
            return Score(float(result), f"{self.reference} returned {format_number(float(result))}")
        raise ScoreError(
            f"scorer {self.reference} returned {_quoted(repr(result))} for sample {sample.id!r}; "
            "return a Score, a number from 0 to 1, or a bool"
        )
