"""`python -m bench.table` renders a results file whose lines have no baseline (cli_startup, rate_limit)."""

from bench.table import render


def test_a_line_without_a_ratio_renders_with_no_baseline():
    header = {
        "bench": "qmcp vs LangGraph",
        "date": "d",
        "machine": {"cpus": 2, "memory_gb": 1, "python": "3"},
    }
    header["versions"] = {"qmcp": "0"}
    alone = {
        "workload": "cli_startup",
        "variant": "help",
        "qmcp": {"seconds": {"median": 0.4, "min": 0.39, "max": 0.42}, "runs": 3, "peak_rss_mb": 25.0},
        "targets": [{"name": "qmcp --help seconds", "value": 0.4, "op": "<=", "limit": 0.3, "met": False}],
    }
    table = render([header, alone])
    (row,) = [line for line in table.splitlines() if line.startswith("| cli_startup")]
    assert "0.4 s (0.39–0.42)" in row and "❌ qmcp --help seconds <= 0.3" in row
