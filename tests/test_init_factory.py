"""``mutune init --model factory`` writes a spec that works from any folder (issue 23): the model file goes
beside the spec and the spec names it relative to itself (``my_model.py:build``); loading the spec
makes the path absolute, so the run's config.yaml finds it from anywhere. A missing factory is refused
before torch loads.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

from mutune import config, docs

from .conftest import ROOT


def _mutune(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mutune", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_the_factory_spec_runs_from_any_folder(tmp_path):
    home, elsewhere = tmp_path / "project" / "specs", tmp_path / "somewhere" / "else"
    home.mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    r = _mutune("init", "--model", "factory", "specs/my.yaml", cwd=tmp_path / "project")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in home.iterdir()) == ["my.yaml", "my_model.py"]
    assert yaml.safe_load((home / "my.yaml").read_text())["model"]["factory"] == "my_model.py:build"
    # from a folder that is neither the spec's nor the repository's: the search and a transfer
    spec = home / "my.yaml"
    r = _mutune("-q", "search", spec, "--smoke", "search.n_trials=1", "--no-transfer", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    run = elsewhere / "runs" / "my-smoke"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]["factory"]
    assert recorded == f"{home / 'my_model.py'}:build"  # absolute: config.yaml is a copy elsewhere
    r = _mutune("-q", "transfer", run, "--to", "width=48", cwd=tmp_path)  # a third folder
    assert r.returncode == 0, r.stderr


def test_init_refuses_to_overwrite_the_model_file_too(tmp_path):
    (tmp_path / "my_model.py").write_text("# mine\n")
    r = _mutune("init", "--model", "factory", "my.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "my_model.py" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "my.yaml").exists() and (tmp_path / "my_model.py").read_text() == "# mine\n"
    assert _mutune("init", "--model", "factory", "my.yaml", "--force", cwd=tmp_path).returncode == 0
    assert "def build(" in (tmp_path / "my_model.py").read_text()


def test_a_relative_factory_path_is_the_spec_files_and_a_typed_one_is_the_shells(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_text(docs.starter_model())
    spec = tmp_path / "a" / "s.yaml"
    spec.write_text(yaml.safe_dump({"model": {"family": "factory", "factory": "m.py:build", "width": 32}}))
    monkeypatch.chdir(tmp_path)
    assert config.load_spec(spec).model.factory == f"{tmp_path / 'a' / 'm.py'}:build"
    typed = config.load_spec(spec, ["model.factory=a/m.py:build"]).model.factory
    assert typed == "a/m.py:build"  # relative to here, as typed


PROBE = """
import json, sys
from mutune import cli
code = cli.main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("factory", ["gone.py:build", "no_such_package.models:build"])
def test_a_missing_factory_is_refused_before_torch_loads(tmp_path, factory):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"model": {"family": "factory", "factory": factory, "width": 32}}))
    for args in (["search", "s.yaml", "--smoke"], ["coord-check", "s.yaml"], ["inspect", "s.yaml"]):
        p = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(args)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"},
        )
        result = json.loads(p.stdout.strip().splitlines()[-1])
        assert result == {"code": 2, "torch": False}, p.stderr
        assert p.stderr.startswith("error: model.factory: ") and len(p.stderr.strip().splitlines()) == 1


def test_the_starter_model_is_the_examples_model():
    """The packaged starter (what init writes) and examples/my_model.py (what configs/factory.yaml and
    the pinned losses use) are the same code; only their docstrings differ."""

    def code(text: str) -> str:
        tree = ast.parse(text)
        tree.body = [
            n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        ]
        return ast.dump(tree)

    assert code(docs.starter_model()) == code((ROOT / "examples" / "my_model.py").read_text())
