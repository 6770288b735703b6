"""A command line that fits into a day: answers at once, prints lines a person can paste, says where it is.

- help, ``show-config``, ``init`` and argument errors load neither torch nor Optuna, pandas or
  matplotlib (checked in a fresh interpreter's ``sys.modules``);
- commands, paths and resume lines are never wrapped, even in a 30-column terminal or a pipe;
- ``--to`` keys get "did you mean", as spec keys do; ``show-config`` leaves out keys that do not apply;
- a search that shares its study says which trials this process ran and what the study holds.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import typer
import yaml

from mutune import cli, config, search
from mutune.cli.progress import Display
from mutune.events import TrialEvent

from .conftest import CONFIGS, ROOT, TINY, write_spec
from .test_robustness import SLOW, finish, fresh_running_trial, wait_for

HEAVY = ("torch", "optuna", "pandas", "matplotlib", "numpy")
PROBE = """
import json, sys
from mutune import cli
code = cli.main(json.loads(sys.argv[1]))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(args: list[str], cwd) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"},
        timeout=120,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


COMMANDS = ["search", "transfer", "report", "init", "show-config", "coord-check", "sweep"]
LIGHT = [
    ["--help"],
    ["--version"],
    *[[c, "--help"] for c in COMMANDS],
    ["show-config", str(CONFIGS / "quickstart.yaml"), "train.steps=50"],
    ["show-config", str(CONFIGS / "quickstart.yaml"), "--smoke"],
    ["init", "new.yaml"],
    ["search"],  # missing argument
    ["transfer", "--nproc", "many"],  # not an integer
    ["search", "no-such.yaml"],  # missing file
    ["show-config", str(CONFIGS / "quickstart.yaml"), "train.setps=5"],  # unknown key
    ["frobnicate"],  # no such command
]


@pytest.mark.parametrize("args", LIGHT, ids=lambda a: " ".join(a)[:40])
def test_help_config_init_and_errors_load_no_heavy_module(args, workdir):
    r = _probe(args, workdir)
    assert r["heavy"] == [], f"mutune {' '.join(args)} imported {r['heavy']}"


def test_the_probe_sees_a_command_that_needs_the_stack(workdir):
    """The same probe reports torch when a command does train or plan (so the test above can fail)."""
    r = _probe(["report", "no-such-run"], workdir)  # imports the report module, then fails on the path
    assert r["code"] == 2 and {"pandas", "torch"} & set(r["heavy"])


def test_help_shows_flags_as_flags_and_an_example_that_fits(capsys):
    """No ``<bool>`` type column; every command says how to call it, in one line of under 80 columns."""
    command = typer.main.get_command(cli.app)
    for name in [None, *COMMANDS]:
        args = ["--help"] if name is None else [name, "--help"]
        capsys.readouterr()
        assert cli.main(args) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text and "--help" in text
    for name, sub in command.commands.items():
        examples = [line.strip() for line in sub.help.splitlines() if line.strip().startswith("Example:")]
        assert len(examples) == 1, name
        assert examples[0].startswith(f"Example: mutune {name}") and len(examples[0]) <= 78, examples[0]


def _narrow(**env) -> dict:
    return {**os.environ, "CI": "true", "COLUMNS": "30", "PYTHONUNBUFFERED": "1", **env}


def test_resume_line_is_never_wrapped(workdir):
    """A 30-column pipe: the resume command after an interrupt is one line, and it resumes when pasted."""
    deep = workdir / "a-rather-long-folder-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    spec = write_spec(
        deep / "robust-with-a-long-name.yaml", {**SLOW, "name": "robust", "search": {"n_trials": 2}}
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "mutune", "search", str(spec), "--no-transfer", "train.eval_batches=2"],
        cwd=workdir,
        env=_narrow(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: fresh_running_trial(workdir / "runs" / "robust"))
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)  # pre-emption, as a scheduler does it
    code, out, err = finish(p)
    assert code == 130, err
    lines = err.splitlines()
    resume = [line.strip() for line in lines if line.strip().startswith("mutune search")]
    assert resume == [f"mutune search {spec} --no-transfer train.eval_batches=2"], err
    pasted = shlex.split(resume[0])
    assert pasted[0] == "mutune"
    code, out, err = finish(
        subprocess.Popen(
            [sys.executable, "-m", "mutune", *pasted[1:]],
            cwd=workdir,
            env=_narrow(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    )
    assert code == 0, err
    # the result's path, on one line
    assert any("-> runs/robust/best.yaml" in line for line in out.splitlines())


def test_plan_and_target_paths_are_never_wrapped(workdir):
    spec = config.spec_from_dict({**TINY, "name": "a-target-whose-name-is-long", "search": {"n_trials": 1}})
    run = workdir / "runs" / "a-target-whose-name-is-long"
    search.search(spec, run_dir=run, transfer=False, argv=["test"])
    args = [sys.executable, "-m", "mutune", "transfer", str(run), "--to", "width=48", "--to", "train.steps=4"]
    done = subprocess.run(args, cwd=workdir, env=_narrow(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    target = str(run / "target-width48-steps4")
    assert any(target in line for line in done.stdout.splitlines())  # the plan's title and the result line
    assert sum(target in line for line in done.stdout.splitlines()) == 2


@pytest.fixture
def tiny_run(workdir):
    spec = config.spec_from_dict({**TINY, "name": "tr", "search": {"n_trials": 1}})
    search.search(spec, run_dir=workdir / "runs" / "tr", transfer=False, argv=["test"])
    return workdir / "runs" / "tr"


@pytest.mark.parametrize(
    "token, hint",
    [
        ("widht=1024", "'width'"),
        ("setps=50", "'train.steps'"),
        ("train.setps=50", "'train.steps'"),
        ("modle.depth=4", "'model'"),
    ],
)
def test_to_keys_get_did_you_mean(tiny_run, run_cli, token, hint):
    r = run_cli("transfer", tiny_run, "--to", token, "--dry-run")
    assert r.code == 2 and "unknown key" in r.err and f"did you mean {hint}" in r.err, r
    assert len(r.err.strip().splitlines()) == 1


def test_show_config_leaves_out_keys_that_do_not_apply(run_cli, workdir):
    spec = write_spec(
        workdir / "s.yaml",
        {
            **TINY,
            "search": {
                "space": {
                    "lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1},
                    "beta1": {"type": "categorical", "choices": [0.8, 0.9]},
                }
            },
        },
    )
    r = run_cli("show-config", spec)
    assert r.code == 0
    shown = yaml.safe_load(r.out)
    assert shown["search"]["space"]["lr"] == {"type": "log_uniform", "low": 1e-3, "high": 1e-1}
    assert shown["search"]["space"]["beta1"] == {"type": "categorical", "choices": [0.8, 0.9]}
    assert "factory" not in shown["model"] and "readout" not in shown["model"]  # another family's keys
    assert shown["tracker"] == {"backend": "none"}
    (workdir / "shown.yaml").write_text(r.out)
    assert config.load_spec(workdir / "shown.yaml") == config.load_spec(
        spec
    )  # it loads back as the same spec


def test_resumed_search_says_which_trials_ran_here(run_cli, workdir):
    spec = write_spec(workdir / "tiny.yaml", TINY)
    assert run_cli("search", spec, "--no-transfer", "search.n_trials=2").code == 0
    r = run_cli("search", spec, "--no-transfer", "search.n_trials=4")
    assert r.code == 0, r
    assert "resuming a study that holds 2 finished" in r.err
    assert "[4/4 finished in the study; 2 ran here]" in r.err
    assert "this process ran 2 trial(s) (#2, #3); the study holds 4 finished, 2 from earlier" in r.err


def test_trials_of_other_processes_are_named_as_theirs(capsys, monkeypatch):
    monkeypatch.setenv("CI", "true")
    d = Display()
    d.search_started(config.spec_from_dict(TINY), ROOT, 1)
    ev = dict(
        state="COMPLETE",
        value=3.0,
        params={},
        seconds=1.0,
        reason="",
        n_trials=4,
        best_value=3.0,
        best_number=1,
    )
    d.trial_ended(TrialEvent(number=1, finished=2, running=2, worker="nodeB:4242", ran_here=False, **ev))
    d.trial_ended(TrialEvent(number=2, finished=3, running=1, worker="here:1", ran_here=True, **ev))
    err = capsys.readouterr().err.splitlines()
    assert "ran by nodeB:4242" in err[-2] and "[2/4 finished in the study, 2 running; 0 ran here]" in err[-2]
    assert "ran by" not in err[-1] and "[3/4 finished in the study, 1 running; 1 ran here]" in err[-1]
    assert (
        d.summary(3)
        == "this process ran 1 trial(s) (#2); the study holds 3 finished, 2 from earlier runs or other processes"
    )
