"""The package rules of docs/architecture.md, checked on the sources."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


@pytest.mark.parametrize(
    "package, forbidden",
    [("identity", ("consent_portal", "ledger")), ("ledger", ("consent_portal", "identity"))],
)
def test_reusable_apps_do_not_import_the_project_or_each_other(package, forbidden):
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imported_modules(package)
        if module.split(".")[0] in forbidden
    ]
    assert not bad, bad


def test_didkit_is_imported_in_exactly_one_module():
    users = {
        str(path.relative_to(ROOT))
        for package in ("consent_portal", "identity", "ledger")
        for path, module in imported_modules(package)
        if module.split(".")[0] == "didkit"
    }
    assert users == {"identity/didkit_backend.py"}
