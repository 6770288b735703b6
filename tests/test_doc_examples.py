"""Every example in README.md and docs/ runs as written after the README's set-up, from a fresh clone
(issue 23).

Each ``bash`` and ``python`` block is run, in document order, in a copy of the repository's configs
and examples (a fresh clone as far as the examples can tell; mutune itself is the installed one):
README.md, then docs/cli.md, laws.md, python.md and the rest in one copy, docs/recipes.md in another
made after the README's set-up. A block says how, in an HTML comment on the line before it:

- ``<!-- doc-test: smoke -->``: run on smoke-sized copies of the spec files (each spec as
  ``mutune show-config SPEC --smoke`` prints it, but with 4 trials where the spec has more: the
  README's snippet asks for 4, no more than its set-up ran, as with the 16 it runs at full size), so
  that a search takes seconds; the originals are back after the block. The README's set-up is one.
- ``<!-- doc-test: skip: REASON -->``: not run here, for the reason given (GPUs, a database, a
  download, an hour of CPU, or another test that runs it as written).
- ``<!-- doc-test: needs: MODULE -->``: skipped where MODULE is not installed.
- ``<!-- doc-test: unchanged: PATH ... -->``: those files must be byte for byte the same after it.

The set-up's ``pip install`` is this environment (the shell's ``pip`` is a no-op here) and its
``python -m pytest -q`` is this test suite (not run again from inside it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mutune import config

from .conftest import ROOT

SMOKE_TRIALS = 4  # trials of a smoke-sized spec copy (mutune's --smoke runs 3)
FIRST = [ROOT / "README.md", *(ROOT / "docs" / n for n in ("cli.md", "laws.md", "python.md"))]
OTHERS = sorted(p for p in (ROOT / "docs").glob("*.md") if p not in FIRST and p.name != "recipes.md")
GROUPS = {"main": [*FIRST, *OTHERS], "recipes": [ROOT / "docs" / "recipes.md"]}
PRELUDE = """set -euo pipefail
pip() { echo "(pip $*: this environment has it)"; }
python() {
    if [ "${1:-}" = -m ] && [ "${2:-}" = pytest ]; then echo "(python -m pytest: the suite running this test)"
    else command python "$@"; fi
}
"""


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The runnable blocks of ``doc``, each with the notes of the ``doc-test`` comment above it."""
    text = doc.read_text()
    out = []
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        notes = {}
        c = re.fullmatch(r"<!-- doc-test: (.*) -->", before.strip())
        if c and c.group(1).startswith("skip:"):  # the reason is the rest, semicolons and all
            notes["skip"] = c.group(1).removeprefix("skip:").strip()
        elif c:
            for item in c.group(1).split(";"):
                key, _, value = item.strip().partition(":")
                notes[key.split(" (")[0].strip()] = value.strip()
        out.append(Block(doc, line, m.group(1), m.group(2), notes))
    return out


ALL = [(group, b) for group, docs in GROUPS.items() for doc in docs for b in blocks(doc)]


def test_every_runnable_block_is_found_and_every_skip_says_why():
    assert len(ALL) >= 25
    for _, b in ALL:
        assert set(b.notes) <= {"smoke", "skip", "needs", "unchanged"}, b.id
        if "skip" in b.notes:
            assert len(b.notes["skip"]) > 10, f"{b.id}: a skip says why"


class Clone:
    """A fresh copy of the repository's configs and examples, where a group of blocks runs in order."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        for name in ("configs", "examples"):
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        self.done = 0  # blocks of the group run so far

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)  # this environment's mutune
        return {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "CI": "true",
            "GITHUB_STEP_SUMMARY": str(self.root / "step-summary.md"),  # as a CI job has it
        }

    def run(self, b: Block) -> None:
        originals = self._smoke() if "smoke" in b.notes else {}
        watched = b.notes.get("unchanged", "").split()
        before = {p: (self.root / p).read_bytes() for p in watched}
        try:
            cmd = ["bash", "-c", PRELUDE + b.code] if b.lang == "bash" else [sys.executable, "-c", b.code]
            p = subprocess.run(
                cmd, cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=900
            )
        finally:
            for path, text in originals.items():
                path.write_text(text)
        assert p.returncode == 0, (
            f"{b.id} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
        for path, data in before.items():
            assert (self.root / path).read_bytes() == data, f"{b.id} changed {path}"

    def _smoke(self) -> dict[Path, str]:
        """Every spec file here replaced by its smoke variant; returns the originals."""
        originals = {}
        for path in [*self.root.glob("*.yaml"), *self.root.glob("configs/*.yaml")]:
            text = path.read_text()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # --smoke swaps a missing data.path for the built-in corpus
                spec = config.load_spec(path, smoke=True)
                trials = config.load_spec(path).search.n_trials or config.DEFAULT_N_TRIALS
            shown = config.shown(spec)
            shown["search"]["n_trials"] = min(trials, SMOKE_TRIALS)
            path.write_text(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True))
            originals[path] = text
        return originals


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    return {}


def _clone(clones: dict, group: str, tmp_path_factory) -> Clone:
    if group not in clones:
        if group == "main":
            clones[group] = Clone(tmp_path_factory.mktemp("docs") / "clone")
        else:  # after the README's set-up, as the main clone ran it
            main = _clone(clones, "main", tmp_path_factory)
            _catch_up(clones, "main", 1, tmp_path_factory)
            clone = Clone(tmp_path_factory.mktemp("docs") / "clone")
            shutil.copytree(main.root / "runs", clone.root / "runs")
            clones[group] = clone
    return clones[group]


def _catch_up(clones: dict, group: str, upto: int, tmp_path_factory) -> None:
    """Run the group's blocks before ``upto`` that have not run yet (a block selected alone with -k
    still finds what the ones before it made)."""
    clone = _clone(clones, group, tmp_path_factory)
    mine = [b for g, b in ALL if g == group]
    while clone.done < upto:
        b = mine[clone.done]
        clone.done += 1
        if _runnable(b) is None:
            clone.run(b)


def _runnable(b: Block) -> str | None:
    """Why ``b`` is not run here, or None."""
    if "skip" in b.notes:
        return b.notes["skip"]
    need = b.notes.get("needs")
    if need:
        import importlib.util

        if importlib.util.find_spec(need) is None:
            return f"needs {need}, not installed here"
    return None


@pytest.mark.parametrize("group, block", ALL, ids=[b.id for _, b in ALL])
def test_the_example_runs_as_written(group, block, clones, tmp_path_factory):
    mine = [b for g, b in ALL if g == group]
    index = mine.index(block)
    _catch_up(clones, group, index, tmp_path_factory)
    why = _runnable(block)
    clone = clones[group]
    clone.done = max(clone.done, index + 1)
    if why is not None:
        pytest.skip(why)
    clone.run(block)
