"""The browser console served by `qmcp serve` at `/`: server-rendered pages, SVG drawn on the server,
one small script and one stylesheet shipped in the package (no build step, nothing from a CDN)."""

from ._evals import router as _eval_pages
from ._forks import router as _fork_router
from ._routes import router
from ._sessions import CONSOLE_COOKIE, ConsoleSessions, LoginLimiter

router.include_router(_fork_router)  # "Fork from here" and the comparison of two executions
router.include_router(_eval_pages)  # the eval pages (`_evals.py`): /evals, /evals/{id}

__all__ = ["CONSOLE_COOKIE", "ConsoleSessions", "LoginLimiter", "router"]
