"""qmcp's own import-linter contract type, named by pyproject.toml's `[tool.importlinter]`.

`public_names`: no module imports a private module (a name starting with `_`) of another package.
A private module belongs to its parent package; a module's package is its parent (a package's
`__init__` is its own package). Stricter than import-linter's `private_modules`, which also lets a
subpackage reach into its ancestors' private modules: here a subpackage, like any other package,
goes through the names its neighbours export (their `__init__`'s `__all__`, or a public module).
"""

from __future__ import annotations

from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.application import contract_utils

__all__ = ["PublicNamesContract", "private_owner"]


def _private(component: str) -> bool:
    return component.startswith("_") and not (component.startswith("__") and component.endswith("__"))


def private_owner(module: str) -> tuple[str, str] | None:
    """(the package a private module belongs to, the private module itself), from its innermost
    private component; None for a public module. A top-level name is never private."""
    parts = module.split(".")
    for index in range(len(parts) - 1, 0, -1):
        if _private(parts[index]):
            return ".".join(parts[:index]), ".".join(parts[: index + 1])
    return None


def _package(graph: grimp.ImportGraph, module: str) -> str:
    """The package `module` belongs to: itself when it is a package, else its parent."""
    return module if graph.find_children(module) or "." not in module else module.rsplit(".", 1)[0]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class PublicNamesContract(Contract):
    """Options: `ignore_imports` (import expressions, e.g. `a.b -> a.c._d`, for a named exception) and
    `unmatched_ignore_imports_alerting` (none, warn or error: an ignore that matches nothing; default error)."""

    type_name = "public_names"

    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)
    unmatched_ignore_imports_alerting = fields.EnumField(
        contract_utils.AlertLevel, default=contract_utils.AlertLevel.ERROR
    )

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,
            unmatched_alerting=self.unmatched_ignore_imports_alerting,
        )
        illegal: list[dict[str, Any]] = []
        for imported in sorted(graph.modules):
            owner = private_owner(imported)
            if owner is None:
                continue
            package, private = owner
            for importer in sorted(graph.find_modules_that_directly_import(imported)):
                home = _package(graph, importer)
                if home == package or _within(home, private):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                illegal.append(
                    {
                        "importer": importer,
                        "imported": imported,
                        "lines": [detail["line_number"] for detail in details],
                    }
                )
        return ContractCheck(
            kept=not illegal,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"illegal_imports": illegal},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error(
            "Private modules of another package imported (use a name the package exports):", bold=False
        )
        output.new_line()
        for link in check.metadata["illegal_imports"]:
            lines = ", ".join(map(str, link["lines"]))
            output.print_error(f"- {link['importer']} -> {link['imported']} (l.{lines})", bold=False)
        output.new_line()
