"""docs/eval-data.md: its Python examples run, and its scorer table lists every scorer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qmcp.eval import SCORER_KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "eval-data.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_doc_has_examples():
    assert len(EXAMPLES) == 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_each_python_example_runs(index):
    exec(compile(EXAMPLES[index], f"{DOC}:example{index + 1}", "exec"), {"__name__": "docs_eval_data"})


def test_the_scorer_table_lists_every_scorer():
    table = {row.split("|")[1].strip() for row in DOC.read_text().splitlines() if row.startswith("| `")}
    for kind in SCORER_KINDS:
        base = kind.split(":")[0].split("[")[0]
        assert any(cell.startswith(f"`{base}") for cell in table), kind
