"""The code's shape holds: imports point one way (µP core ← spec ← models ← run ← study ← jobs ← CLI),
no import circle anywhere in mutune/, the µP core and the spec load without what sits above them,
and ``mutune report`` runs without torch.

Every import counts, module-level or inside a function (a lazy import is still a dependency);
imports under ``if TYPE_CHECKING:`` do not (they are for type checkers only). A module is as long
as its one concept needs: there is no line limit.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CONFIGS, ROOT

PACKAGE = ROOT / "mutune"

# (prefix, layer): a module may import modules of its own layer or below, never above.
LAYERS = (
    ("mutune.errors", 0),
    ("mutune.units", 0),
    ("mutune.files", 0),
    ("mutune.events", 0),
    ("mutune.mup", 1),  # the µP core: axes, rules, parametrizations, optimizers, shapes, init, hooks, optim
    ("mutune.config", 2),  # the spec: schema and meaning, families, validation, target, run dir
    ("mutune.models", 3),
    ("mutune.data", 3),
    ("mutune.flops", 3),
    ("mutune.device", 3),
    ("mutune.memory", 3),
    ("mutune.train", 4),
    ("mutune.trackers", 4),
    ("mutune.study", 5),
    ("mutune.cli", 7),
    ("mutune.__main__", 7),
)
JOBS = 6  # every other module: search, transfer, sweep, laws, checks, report, inspect, docs...


def layer(module: str) -> int:
    if module == "mutune":  # the package root: lazy names and the callable-module helper only
        return 0
    for prefix, n in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return n
    return JOBS


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The mutune modules ``path`` imports (as the shared import_cycles tool counts them)."""
    mod = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            prefix = base[: len(base) - (node.level - 1)] if node.level else []
            head = ".".join(prefix + ([node.module] if node.module else []))
            names = [f"{head}.{a.name}" for a in node.names] + [head]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != mod:
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    known = set(files)
    graph = {m: imports_of(p, known) for m, p in files.items()}
    # a package's __init__ importing its own submodules (to re-export them) is not a dependency
    for m, deps in graph.items():
        if files[m].name == "__init__.py":
            graph[m] = {d for d in deps if not d.startswith(m + ".")}
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers, as 'a (layer) -> b (layer)'."""
    return sorted(
        f"{a} ({layer(a)}) -> {b} ({layer(b)})"
        for a, deps in graph.items()
        for b in deps
        if layer(b) > layer(a)
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_one_way():
    assert upward(import_graph()) == []


def test_there_is_no_import_circle():
    assert circles(import_graph()) == []


def test_the_shared_tool_agrees_where_it_is_there():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip(f"{tool} is not in this checkout (the developers' machine has it)")
    out = subprocess.run([sys.executable, str(tool), "mutune"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "0 circle(s)" in out.stdout, out.stdout


def test_the_checks_can_fail():
    """An upward import and a circle, in a made-up graph, are both reported."""
    graph = {"mutune.mup.rules": {"mutune.config.schema"}, "mutune.config.schema": {"mutune.mup.rules"}}
    assert upward(graph) == ["mutune.mup.rules (1) -> mutune.config.schema (2)"]
    assert circles(graph) == [["mutune.config.schema", "mutune.mup.rules"]]
    assert layer("mutune.search") == JOBS and layer("mutune.cli.main") == 7


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(out.split())


TORCH_FREE = (
    "mutune.mup.axes",
    "mutune.mup.rules",
    "mutune.mup.parametrizations",
    "mutune.mup.optimizers",
    "mutune.config",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_rules_and_the_spec_load_without_torch_or_what_sits_above(module):
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    above = {m for m in loaded if m.startswith("mutune.") and layer(m) > layer(module)}
    assert not above and "torch" not in loaded and "optuna" not in loaded, sorted(above)


def test_the_probe_can_fail():
    """The same probe sees torch and the spec when a module does load them."""
    loaded = _modules_after("import mutune.models")
    assert "torch" in loaded and "mutune.config" in loaded


def test_report_runs_without_torch(tmp_path):
    run = tmp_path / "run"
    search = [sys.executable, "-m", "mutune", "-q", "search", str(CONFIGS / "quickstart.yaml"), "--smoke"]
    search += ["search.n_trials=2", "--no-transfer", "--skip-check", "--run-dir", str(run)]
    subprocess.run(search, cwd=tmp_path, check=True, capture_output=True)
    probe = (
        "from mutune.cli import main; import sys; "
        f"code = main(['report', {str(run)!r}, '--format', 'json', '--no-plots']); "
        "print('RESULT', code, 'torch' in sys.modules, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert "RESULT 0 False" in out.stderr, out.stderr[-2000:]
