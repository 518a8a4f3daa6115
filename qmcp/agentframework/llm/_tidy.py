"""Tidying the text replies of small local models, which echo their prompt and stop where the
token budget ends.

SmolLM2-135M often starts a reply with a label of its prompt (`Task: ...`, `Output of the previous
stage (critique):`), copies whole lines of its prompt, restates the task (`Your task: How can we ...?`)
and, capped at a few dozen tokens, stops mid-sentence. `tidy_reply` keeps what the reply adds:

* a label of the prompt opening a line is removed, and a line that is only such a label is dropped;
* a line that restates the prompt's question (its first line, or a line ending in `?`) in four words
  or more, nearly all of them that question's, is dropped;
* a long line copied whole from the prompt is dropped when the reply says something else too; when
  it says nothing else, the copy is the answer (the model repeated its input, which is what it did);
* a reply that only restates its prompt becomes empty: an echo of the question is no answer.

When the budget cut the reply, it ends at its last complete sentence. Only the embedded local models
use it; hosted models' replies are stored as they come.
"""

from __future__ import annotations

import re

__all__ = ["tidy_reply"]

_LABEL = re.compile(r"^([A-Z][^:\n]{0,80}):(?:\s|$)")
_ANY_LABEL = re.compile(r"^[A-Za-z][\w ]{0,30}:\s+")  # `Your task: ...`, a label of one to a few words
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s|$)")
_KEEP_AT_LEAST = 0.15
"""Cut at a sentence end only if that keeps this share of the reply; else keep it whole."""
_COPIED_LINE = 40
"""A prompt line at least this long, copied whole, is the prompt's material, not a label."""
_RESTATEMENT_WORDS = 4
_RESTATEMENT_SHARE = 0.8
"""A line of at least `_RESTATEMENT_WORDS` words, this share of them a question's, restates it."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _questions(prompt_lines: list[str]) -> list[set[str]]:
    """The words of each question the prompt asks: its first line (the task) and every line ending in `?`.

    Only these count: a reply may well reuse the words of the material it was given (a synthesis)."""
    asked = prompt_lines[:1] + [line for line in prompt_lines[1:] if line.endswith("?")]
    return [set(_words(_ANY_LABEL.sub("", line, count=1))) for line in asked]


def _restates(line: str, questions: list[set[str]]) -> bool:
    """Whether `line` asks the prompt's question again, in that question's words."""
    words = _words(_ANY_LABEL.sub("", line, count=1))
    if len(words) < _RESTATEMENT_WORDS:
        return False
    return any(sum(word in asked for word in words) >= _RESTATEMENT_SHARE * len(words) for asked in questions)


def tidy_reply(text: str, prompt: str, *, truncated: bool) -> str:
    """What `text` adds to `prompt`: no echoed labels, restated task or copied lines (see the module's
    doc for when a copy stays), ended at a sentence when `truncated`."""
    ordered = [line.strip() for line in prompt.splitlines() if line.strip()]
    prompt_lines = set(ordered)
    labels = {match.group(1) for line in prompt_lines if (match := _LABEL.match(line))}
    questions = _questions(ordered)
    added: list[str] = []  # what the reply says of its own (blank lines kept between paragraphs)
    copied: list[str] = []  # long lines copied whole from the prompt
    restated = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in prompt_lines and stripped.endswith(":"):
            continue  # a label copied from the prompt
        if stripped in prompt_lines and len(stripped) >= _COPIED_LINE:
            copied.append(line)
            continue
        match = _LABEL.match(stripped)
        if match and match.group(1) in labels:
            stripped = stripped[match.end() :].strip()
            if not stripped:
                continue
            line = stripped
        if _restates(stripped, questions):
            restated = True
            continue
        added.append(line)
    kept = added if any(line.strip() for line in added) else copied
    while kept and (not kept[-1].strip() or kept[-1].strip().endswith(":")):
        kept.pop()  # a label opening what never came
    tidy = "\n".join(kept).strip()
    if truncated:
        ends = [match.end() for match in _SENTENCE_END.finditer(tidy)]
        if ends and ends[-1] >= _KEEP_AT_LEAST * len(tidy):
            tidy = tidy[: ends[-1]]
    if tidy or restated:
        return tidy
    return text.strip()
