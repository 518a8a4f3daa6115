"""The browser console served by `qmcp serve` at `/`: server-rendered pages, SVG drawn on the server,
one small script and one stylesheet shipped in the package (no build step, nothing from a CDN)."""

from ._forks import router as _fork_router
from ._routes import router
from ._sessions import CONSOLE_COOKIE, ConsoleSessions, LoginLimiter

router.include_router(_fork_router)  # "Fork from here" and the comparison of two executions

__all__ = ["CONSOLE_COOKIE", "ConsoleSessions", "LoginLimiter", "router"]
