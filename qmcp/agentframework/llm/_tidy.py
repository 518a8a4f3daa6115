"""Tidying the text replies of small local models, which echo their prompt and stop where the
token budget ends.

SmolLM2-135M often starts a reply with a label of its prompt (`Task: ...`, `Output of the previous
stage (critique):`) and, capped at a few dozen tokens, stops mid-sentence. `tidy_reply` removes the
echoed labels and, when the budget cut the reply, ends it at its last complete sentence. Only the
embedded local models use it; hosted models' replies are stored as they come.
"""

from __future__ import annotations

import re

__all__ = ["tidy_reply"]

_LABEL = re.compile(r"^([A-Z][^:\n]{0,80}):(?:\s|$)")
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s|$)")
_KEEP_AT_LEAST = 0.25
"""Cut at a sentence end only if that keeps this share of the reply; else keep it whole."""


def tidy_reply(text: str, prompt: str, *, truncated: bool) -> str:
    """`text` without the prompt's labels and lines it echoes, ended at a sentence when `truncated`."""
    prompt_lines = {line.strip() for line in prompt.splitlines() if line.strip()}
    labels = {match.group(1) for line in prompt_lines if (match := _LABEL.match(line))}
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and stripped in prompt_lines and (stripped.endswith(":") or len(stripped) > 40):
            continue  # a label or a whole instruction copied from the prompt
        match = _LABEL.match(stripped)
        if match and match.group(1) in labels:
            stripped = stripped[match.end() :].strip()
            if not stripped:
                continue
            line = stripped
        kept.append(line)
    while kept and (not kept[-1].strip() or kept[-1].strip().endswith(":")):
        kept.pop()  # a label opening what never came
    tidy = "\n".join(kept).strip()
    if truncated:
        ends = [match.end() for match in _SENTENCE_END.finditer(tidy)]
        if ends and ends[-1] >= _KEEP_AT_LEAST * len(tidy):
            tidy = tidy[: ends[-1]]
    return tidy or text.strip()
