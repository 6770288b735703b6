"""The command line as a tool: help with examples, shell completion, progress and logging modes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import typer
from rich.console import Console

from mutune import cli
from mutune.cli import console

from .conftest import ROOT, TINY, write_spec

COMMANDS = sorted(typer.main.get_command(cli.app).commands)


def test_every_command_is_listed_and_has_help_with_an_example(run_cli):
    assert {"search", "transfer", "report", "init", "show-config"} <= set(COMMANDS)
    r = run_cli("--help")
    assert r.code == 0 and "Example" in r.out
    for name in COMMANDS:
        r = run_cli(name, "--help")
        assert r.code == 0, name
        assert "Example: mutune " + name in r.out, name  # an example line using the command itself


def _mutune(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mutune", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_shell_completion():
    p = _mutune("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert p.returncode == 0 and "_MUTUNE_COMPLETE=complete_bash" in p.stdout
    p = _mutune(env={"_MUTUNE_COMPLETE": "complete_bash", "COMP_WORDS": "mutune sh", "COMP_CWORD": "1"})
    assert p.returncode == 0 and p.stdout.split() == ["show-config"]
    p = _mutune(
        env={"_MUTUNE_COMPLETE": "complete_bash", "COMP_WORDS": "mutune report --format ", "COMP_CWORD": "3"}
    )
    assert p.stdout.split() == ["table", "csv", "json", "md"]


# ---------------------------------------------------------------------------------------------
# Progress and logging


@pytest.fixture
def spec2(workdir):
    return write_spec(workdir / "p.yaml", {**TINY, "search": {"n_trials": 2}, "target": {"width": 48}})


def test_plain_logs_one_line_per_event(run_cli, spec2, monkeypatch):
    monkeypatch.delenv("CI")  # not a terminal (captured) is enough for plain logs
    monkeypatch.setattr(cli.state, "quiet", False)
    assert not console.live_display()
    r = run_cli("search", spec2)
    assert r.code == 0, r
    lines = r.err.splitlines()
    trials = [ln for ln in lines if ln.startswith("trial ")]
    assert len(trials) == 2 and all(
        " COMPLETE loss " in ln and " best " in ln and " eta " in ln for ln in trials
    )
    assert not any(ln.startswith("trial 0 step") for ln in lines)  # trial steps only with -v
    target = [ln for ln in lines if ln.startswith("target step ")]
    assert target and target[-1].startswith("target step 8/8") and all("tok/s" in ln for ln in target)
    assert "\x1b[" not in r.err  # no control codes in logs
    assert "best trial #" in r.out


def test_verbose_logs_every_step_and_quiet_logs_nothing(run_cli, spec2):
    r = run_cli("search", spec2, "-v", "--no-transfer")
    assert r.code == 0, r
    assert any(ln.startswith("trial 0 step 1/8 ") for ln in r.err.splitlines())
    assert any(ln.startswith("trial 1 step 8/8 ") for ln in r.err.splitlines())
    r = run_cli("search", spec2, "search.n_trials=3", "--quiet")
    assert r.code == 0, r
    assert r.err == ""  # no progress at all, not even the target's
    assert "best trial #" in r.out  # results still go to stdout


def test_live_bars_on_a_terminal(run_cli, spec2, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buf, force_terminal=True, width=100))
    monkeypatch.setattr(cli.state, "quiet", False)  # the CLI state of an earlier in-process call
    monkeypatch.delenv("CI")
    assert console.live_display()
    r = run_cli("search", spec2)
    assert r.code == 0, r
    text = buf.getvalue()
    assert "\x1b[" in text and "trials" in text and "tok/s" in text  # bars were drawn
    monkeypatch.setenv("CI", "true")
    assert not console.live_display()  # CI=true: plain logs even on a terminal
    monkeypatch.delenv("CI")
    monkeypatch.setattr(cli.state, "quiet", True)
    assert not console.live_display()  # --quiet: no bars


def test_tracebacks_only_with_debug(run_cli, workdir, monkeypatch):
    def boom(run_dir):
        raise RuntimeError("kaboom")

    import mutune.report

    monkeypatch.setattr(mutune.report, "report", boom)  # the command imports it when it runs
    r = run_cli("report", "somewhere")
    assert r.code == 1 and r.err.strip().splitlines() == [
        "error: internal error: RuntimeError: kaboom (run with --debug for the traceback)"
    ]
    with pytest.raises(RuntimeError, match="kaboom"):
        run_cli("report", "somewhere", "--debug")


@pytest.mark.parametrize("command", ["search", "sweep"])
def test_bad_worker_count_is_refused_before_anything_is_written(run_cli, workdir, command):
    spec = write_spec(workdir / "tiny.yaml", TINY)
    r = run_cli(command, spec, "--workers", "0")
    assert r.code == 2
    assert "--workers" in r.err and "Traceback" not in r.err
    assert not (workdir / "runs").exists()
