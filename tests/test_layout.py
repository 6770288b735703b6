"""The code's shape holds: the µP core imports nothing of the spec or the CLI; sizes stay small."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from .conftest import ROOT

CORE = ("mutune.shapes", "mutune.rules", "mutune.multipliers", "mutune.optim")
SPEC_AND_CLI = (
    "mutune.config",
    "mutune.typed",
    "mutune.cli",
    "mutune.cli.console",
    "mutune.models",
    "mutune.search",
    "mutune.transfer",
    "mutune.train",
)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("module", CORE)
def test_the_mup_core_imports_nothing_of_the_spec_or_the_cli(module):
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    assert not loaded & set(SPEC_AND_CLI), sorted(loaded & set(SPEC_AND_CLI))


def test_the_core_check_can_fail():
    """The same probe sees the spec layer when a module does import it (so the test above can fail)."""
    assert "mutune.config" in _modules_after("import mutune.models")


def _python_files():
    return sorted((ROOT / "mutune").rglob("*.py"))


# Modules allowed past ~400 lines, and why (see docs/layout.md).
LONG_MODULES: dict[str, str] = {}
# Functions allowed past ~60 lines of code (docstring excluded), and why: straight-line figure code.
LONG_FUNCTIONS = {"plot_png", "plot"}


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    if path.name not in LONG_MODULES:
        assert len(text.splitlines()) <= 420, f"{path} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in LONG_FUNCTIONS:
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            start = body[1].lineno if has_doc and len(body) > 1 else body[0].lineno
            assert node.end_lineno - start + 1 <= 60, f"{path}:{node.lineno} {node.name} is too long"
