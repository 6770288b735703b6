"""The documentation stays true: generated reference current, links resolve, commands exist."""

from __future__ import annotations

import dataclasses
import re
import typing

import typer

from mutune import cli, config, docs

from .conftest import ROOT

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_config_reference_is_up_to_date():
    assert docs.CONFIG_MD.read_text() == docs.config_reference(), (
        "docs/config.md is out of date: run `python -m mutune.docs`"
    )
    assert docs.main(["--check"]) == 0


def test_config_reference_lists_every_key(tmp_path, monkeypatch):
    text = docs.config_reference()

    def paths(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                yield from paths(tp, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f.metadata["doc"]

    for path, doc in paths(config.Spec):
        (row,) = [ln for ln in text.splitlines() if ln.startswith(f"| `{path}` |")]
        assert docs._md(doc) in row, path
    for f in dataclasses.fields(config.ParamSpace):
        assert f"| `{f.name}` |" in text
    stale = tmp_path / "config.md"
    stale.write_text(text.replace("optimizer steps per run", "steps"))
    monkeypatch.setattr(docs, "CONFIG_MD", stale)
    assert docs.main(["--check"]) == 1


def test_readme_keeps_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install torch==2.13.0 -e ".[test]" && mutune search configs/quickstart.yaml' in readme
    assert "python -m pytest -q" in readme


def test_relative_links_resolve():
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_documented_commands_exist():
    commands = set(typer.main.get_command(cli.app).commands)
    for path in DOC_FILES:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for name in re.findall(r"(?:^|&& |\| )mutune ([a-z][a-z-]*)", block, flags=re.M):
                assert name in commands, f"{path.name}: mutune {name}"
