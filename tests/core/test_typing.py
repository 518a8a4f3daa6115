"""Every `# type: ignore` in the package names its error code and says why, on the same line
(CI runs mypy strict on the package, with unused ignores reported: .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "qmcp"
JUSTIFIED = re.compile(r"# type: ignore\[[a-z-]+(, ?[a-z-]+)*\]  # \S.{8,}")


def test_every_type_ignore_is_justified():
    unjustified = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "# type: ignore" in line and not JUSTIFIED.search(line)
    ]
    assert unjustified == []


def test_mypy_is_strict_on_the_package_in_ci():
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and config["files"] == ["qmcp"]
    assert "\nmypy\n" in (PACKAGE.parent / ".ci" / "run").read_text()
