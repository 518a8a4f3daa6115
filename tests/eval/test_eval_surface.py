"""qmcp.eval's public names, pinned so the API changes only on purpose, and its imports kept light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qmcp.eval

PUBLIC = {
    # datasets
    "COLUMN_NAMES",
    "MAX_DATASET_BYTES",
    "MAX_ID_LENGTH",
    "MAX_SAMPLES",
    "MAX_SAMPLE_BYTES",
    "Dataset",
    "DatasetError",
    "Sample",
    "Target",
    "format_number",
    # scorers
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
    # statistics
    "EXACT_BELOW",
    "McNemar",
    "mcnemar",
    "paired_bootstrap",
    "percentile",
    "wilson_interval",
}


def test_the_public_names_are_pinned():
    # The engine and the report (`_run.py`, `_report.py`) add their names beside these.
    assert set(qmcp.eval.__all__) >= PUBLIC, "a public name went missing"
    assert all(hasattr(qmcp.eval, name) for name in qmcp.eval.__all__)


@pytest.mark.slow  # a fresh interpreter's imports
def test_reading_datasets_and_scoring_imports_no_model_layer():
    code = (
        "import asyncio, sys, qmcp.eval as e\n"
        "s = e.Dataset.from_records([{'input': 'q', 'target': 1}]).samples[0]\n"
        "asyncio.run(e.parse_scorer('number').score(s, '1'))\n"
        "print(sorted(m for m in ('pydantic_ai', 'qmcp.server', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
