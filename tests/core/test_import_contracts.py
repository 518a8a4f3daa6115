"""The `public_names` import contract (tests/import_contracts.py), on small import graphs: what it
lets through and what breaks it. CI runs the project's contracts with `lint-imports`."""

from __future__ import annotations

from typing import Any

import grimp
import pytest
from import_contracts import PublicNamesContract, private_owner
from importlinter.domain.helpers import MissingImport

MODULES = [
    "pkg",
    "pkg._util",
    "pkg.core",
    "pkg.core._impl",
    "pkg.core._other",
    "pkg.core.api",
    "pkg.door",
    "pkg.door._routes",
    "pkg.door.console",
    "pkg.door.console._pages",
    "pkg._vendored",
    "pkg._vendored.a",
    "pkg._vendored._b",
]


def check(*imports: tuple[str, str], **options: Any) -> list[tuple[str, str]]:
    graph = grimp.ImportGraph()
    for module in MODULES:
        graph.add_module(module)
    for line, (importer, imported) in enumerate(imports, start=1):
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents="import")
    result = PublicNamesContract("public names", {}, options).check(graph, verbose=False)
    illegal = [(link["importer"], link["imported"]) for link in result.metadata["illegal_imports"]]
    assert result.kept == (not illegal)
    return illegal


def test_a_package_uses_its_own_private_modules():
    assert not check(
        ("pkg.core.api", "pkg.core._impl"),  # a sibling
        ("pkg.core", "pkg.core._impl"),  # the package's __init__
        ("pkg.core._impl", "pkg.core._other"),
        ("pkg._vendored.a", "pkg._vendored._b"),  # inside a private package
        ("pkg._vendored._b", "pkg._vendored.a"),
    )


def test_another_package_uses_public_names_only():
    assert not check(("pkg.door._routes", "pkg.core.api"), ("pkg.door._routes", "pkg.core"))
    assert check(("pkg.door._routes", "pkg.core._impl")) == [("pkg.door._routes", "pkg.core._impl")]
    assert check(("pkg.core._impl", "pkg._vendored.a")) == [("pkg.core._impl", "pkg._vendored.a")]


def test_subpackages_and_parents_are_other_packages():
    """Stricter than import-linter's `private_modules`: a subpackage does not reach into its parent."""
    assert check(
        ("pkg.core._impl", "pkg._util"),
        ("pkg.door.console._pages", "pkg.door._routes"),
        ("pkg.door.console", "pkg.door._routes"),  # a package's __init__ belongs to the package
        ("pkg.door._routes", "pkg.door.console._pages"),
    ) == [
        ("pkg.core._impl", "pkg._util"),
        ("pkg.door.console", "pkg.door._routes"),
        ("pkg.door.console._pages", "pkg.door._routes"),
        ("pkg.door._routes", "pkg.door.console._pages"),
    ]


def test_a_named_exception_is_ignored_and_must_exist():
    imports = (("pkg.door._routes", "pkg.core._impl"),)
    assert not check(*imports, ignore_imports=["pkg.door._routes -> pkg.core._impl"])
    with pytest.raises(MissingImport):
        check(*imports, ignore_imports=["pkg.door._routes -> pkg.core._other"])


def test_private_owner():
    assert private_owner("pkg.core._impl") == ("pkg.core", "pkg.core._impl")
    assert private_owner("pkg._vendored._b") == ("pkg._vendored", "pkg._vendored._b")
    assert private_owner("pkg._vendored.a") == ("pkg", "pkg._vendored")
    assert private_owner("pkg.core.api") is None
    assert private_owner("pkg.__main__") is None
    assert private_owner("_top") is None
