"""qmcp's performance suite: the workloads of issue 7, measured side by side with LangGraph.

Run it with `python -m bench` (see docs/benchmarks.md). Every workload runs in a fresh
subprocess (`bench._child`), one warm-up and several measured runs; results are JSON lines.
"""
