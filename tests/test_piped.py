"""Tables readable when piped or logged (issue 23): no name cut to "wte.we…". Piped, a table takes the
width it needs, whatever ``COLUMNS`` says; on a terminal it fits the width and folds long cells.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from mutune import config, search
from mutune.cli import checks as cli_checks
from mutune.cli import console

from .conftest import CONFIGS, ROOT, TINY


def _piped(*args, cwd, columns: str = "40") -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT), "COLUMNS": columns}
    return subprocess.run(
        [sys.executable, "-m", "mutune", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


def _cells(text: str) -> set[str]:
    """Every cell of the table lines in ``text``, stripped."""
    return {c.strip() for line in text.splitlines() for c in line.split("│")[1:-1]}


@pytest.mark.parametrize("columns", ["40", "80"])
def test_piped_inspect_holds_every_full_parameter_name(tmp_path, columns):
    spec = CONFIGS / "quickstart.yaml"
    names = [
        p["name"]
        for p in json.loads(_piped("inspect", spec, "--format", "json", cwd=tmp_path).stdout)["parameters"]
    ]
    assert "h.0.attn.c_attn.weight" in names and len(names) > 10
    r = _piped("inspect", spec, "--to", "width=512", cwd=tmp_path, columns=columns)
    assert r.returncode == 0, r.stderr
    cells = _cells(r.stdout)
    assert all(n in cells for n in names), [n for n in names if n not in cells]
    assert "…" not in r.stdout
    assert "192×64 -> 1536×512" in cells  # a shape on one line, not three


def test_on_a_terminal_a_table_fits_and_folds_rather_than_cuts(monkeypatch):
    from mutune import audit

    buf = io.StringIO()
    term = Console(file=buf, force_terminal=True, width=60, soft_wrap=True)
    monkeypatch.setattr(console, "out", term)
    monkeypatch.setattr(cli_checks, "out", term)
    cli_checks.print_inspect(audit.inspect(config.load_spec(CONFIGS / "quickstart.yaml"), ["width=512"]))
    text = buf.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines() if "│" in line) <= 60 + 20  # ANSI codes aside


@pytest.fixture
def tiny_run(tmp_path):
    spec = config.spec_from_dict({**TINY, "name": "tr", "search": {"n_trials": 2}})
    run = tmp_path / "runs" / "tr"
    search.search(spec, run_dir=run, transfer=False, argv=["test"])
    return run


def test_piped_report_and_plan_keep_every_name_whole(tiny_run, tmp_path):
    r = _piped("report", tiny_run, "--no-plots", cwd=tmp_path, columns="40")
    assert r.returncode == 0, r.stderr
    cells = _cells(r.stdout)
    for name in ("lr", "init_std", "alpha_in", "alpha_out", "alpha_attn"):
        assert name in r.stdout.split(), name  # the top-trials header, whole
        assert name in {c.split()[0] for c in cells if c}, name  # the winning-hparams rows
    assert "…" not in r.stdout
    r = _piped("transfer", tiny_run, "--to", "width=4096", "--dry-run", cwd=tmp_path, columns="40")
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    hparams = next(c for line in r.stdout.splitlines() if "hparams" in line for c in line.split("│")[2:3])
    assert "alpha_attn=" in hparams and "momentum=" in hparams  # one line, every hparam
