"""`qmcp eval`: compare topologies on a dataset, with scores and honest uncertainty.

| module | holds |
|---|---|
| `_dataset.py` | `Dataset` and `Sample`: JSONL, JSON or CSV read within bounds, bad samples told by line |
| `_scorers.py` | `parse_scorer` and the built-in scorers (exact, includes, regex, number, choice, json, judge, python) |
| `_stats.py` | Wilson intervals, McNemar's test, the paired bootstrap, percentiles |
| `_spec.py` | `EvalRequest` (what a door asks) and `EvalSpec` (what an `EvalRun` stores to be resumed) |
| `_run.py` | the engine and its operations: start, run, resume an eval (cells as executions, one shared limit) |
| `_report.py` | `eval_report`: per variant accuracy, interval, tokens, cost, latency; pairwise tests; every row |
| `_store.py` | the `EvalRun` and `EvalScore` rows |
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
from ._report import (
    EvalReport,
    JudgeSpend,
    PairReport,
    SampleRow,
    VariantReport,
    cell_answer,
    eval_report,
)
from ._run import EvalOutcome, EvalProgress, prepare_eval, resume_eval, run_eval, start_eval
from ._scorers import (
    SCORER_KINDS,
    Judge,
    Score,
    ScoreError,
    Scorer,
    check_scorable,
    check_scorer_allowed,
    extract_choice,
    extract_number,
    judge_agent,
    judge_prompt,
    normalize_answer,
    parse_scorer,
    parse_verdict,
)
from ._spec import EVAL_STATUSES, EvalRequest, EvalSpec, VariantSpec, parse_budget, reserved_name
from ._stats import EXACT_BELOW, McNemar, mcnemar, paired_bootstrap, percentile, wilson_interval
from ._store import add_scores, eval_scores, get_eval, list_evals

__all__ = [
    "COLUMN_NAMES",
    "EVAL_STATUSES",
    "EXACT_BELOW",
    "MAX_DATASET_BYTES",
    "MAX_ID_LENGTH",
    "MAX_SAMPLES",
    "MAX_SAMPLE_BYTES",
    "SCORER_KINDS",
    "Dataset",
    "DatasetError",
    "EvalOutcome",
    "EvalProgress",
    "EvalReport",
    "EvalRequest",
    "EvalSpec",
    "Judge",
    "JudgeSpend",
    "McNemar",
    "PairReport",
    "Sample",
    "SampleRow",
    "Score",
    "ScoreError",
    "Scorer",
    "Target",
    "VariantReport",
    "VariantSpec",
    "add_scores",
    "cell_answer",
    "check_scorable",
    "check_scorer_allowed",
    "eval_report",
    "eval_scores",
    "extract_choice",
    "extract_number",
    "format_number",
    "get_eval",
    "judge_agent",
    "judge_prompt",
    "list_evals",
    "mcnemar",
    "normalize_answer",
    "paired_bootstrap",
    "parse_budget",
    "parse_scorer",
    "parse_verdict",
    "percentile",
    "prepare_eval",
    "reserved_name",
    "resume_eval",
    "run_eval",
    "start_eval",
    "wilson_interval",
]
