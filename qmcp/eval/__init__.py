"""`qmcp eval`: compare topologies on a dataset, with scores and honest uncertainty.

| module | holds |
|---|---|
| `_dataset.py` | `Dataset` and `Sample`: JSONL, JSON or CSV read within bounds, bad samples told by line |
| `_scorers.py` | `parse_scorer` and the built-in scorers (exact, includes, regex, number, choice, json, judge, python) |
| `_stats.py` | Wilson intervals, McNemar's test, the paired bootstrap, percentiles |
"""

from ._dataset import (
    COLUMN_NAMES,
    MAX_DATASET_BYTES,
    MAX_ID_LENGTH,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLES,
    Dataset,
    DatasetError,
    Sample,
    Target,
    format_number,
)
from ._scorers import (
    SCORER_KINDS,
    Judge,
    Score,
    ScoreError,
    Scorer,
    check_scorer_allowed,
    extract_choice,
    extract_number,
    judge_prompt,
    normalize_answer,
    parse_scorer,
    parse_verdict,
)
from ._stats import EXACT_BELOW, McNemar, mcnemar, paired_bootstrap, percentile, wilson_interval

__all__ = [
    "COLUMN_NAMES",
    "EXACT_BELOW",
    "MAX_DATASET_BYTES",
    "MAX_ID_LENGTH",
    "MAX_SAMPLES",
    "MAX_SAMPLE_BYTES",
    "SCORER_KINDS",
    "Dataset",
    "DatasetError",
    "Judge",
    "McNemar",
    "Sample",
    "Score",
    "ScoreError",
    "Scorer",
    "Target",
    "check_scorer_allowed",
    "extract_choice",
    "extract_number",
    "format_number",
    "judge_prompt",
    "mcnemar",
    "normalize_answer",
    "paired_bootstrap",
    "parse_scorer",
    "parse_verdict",
    "percentile",
    "wilson_interval",
]
