"""Subprocesses of the tests start with the default signal handling, whatever this process inherited.

A shell starts a background job (`nohup pytest ... &`) with SIGINT and SIGQUIT ignored, and children
inherit that: a Python child then never turns SIGINT into KeyboardInterrupt, and a test of Ctrl-C
waits for a process that ignores it. Pass `preexec_fn=default_signals` to `subprocess.Popen`.
"""

from __future__ import annotations

import signal


def default_signals() -> None:
    """Runs in the child between fork and exec: SIGINT and SIGQUIT back to their defaults."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
