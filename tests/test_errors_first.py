"""Every command answers a bad argument or spec before it loads torch (issue 23): exit 2, one line naming
the option, key or file, and ``torch`` absent from the fresh interpreter's ``sys.modules``. The table
covers every registered command (a new command without cases fails the last test).

The Python API names its arguments in the same errors (``run_dir``, ``to``), not the options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer

from mutune import checks, cli, config, search, sweep, transfer
from mutune.errors import SpecError, for_cli

from .conftest import ROOT, TINY, write_spec

PROBE = """
import json, sys
from mutune import cli
code = cli.main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a tiny spec, a finished tiny search of it (runs/tiny) and a plain file."""
    d = tmp_path_factory.mktemp("errors")
    spec = write_spec(d / "tiny.yaml", {**TINY, "search": {"n_trials": 1}})
    search.search(config.load_spec(spec), run_dir=d / "runs" / "tiny", transfer=False, argv=["test"])
    (d / "a-file").write_text("not a folder\n")
    return d


S, R = "tiny.yaml", "runs/tiny"
CASES = {
    "search": [
        (["search", "no-such.yaml"], "no-such.yaml"),
        (["search", S, "train.setps=5"], "train.setps"),
        (["search", S, "--workers", "0"], "--workers"),
        (["search", S, "--threads", "0"], "train.threads"),
        (["search", S, "data.corpus=text", "data.path=missing.txt"], "data.path"),
        (["search", S, "--run-dir", "a-file"], "--run-dir"),
        (["search", S, "--tracker", "nope"], "tracker.backend"),
    ],
    "transfer": [
        (["transfer", "runs/nothere", "--to", "width=128"], "runs/nothere"),
        (["transfer", R, "--to", "widht=1024"], "--to widht"),
        (["transfer", R, "--to", "model.base_width=64"], "--to model.base_width"),
        (["transfer", R, "--to", "hparams.lr=0.1"], "--to hparams.lr"),
        (["transfer", R, "--to", "width=64", "--nproc", "0"], "--nproc"),
        (["transfer", R], "--to"),  # the spec names no target
        (["transfer", S, "--to", "width=64"], "--dry-run"),  # a spec, not a run dir
        (["transfer", R, "--to", "width=64", "--save-plan", "p.yaml"], "--save-plan"),
        (["transfer", R, "--to", "width=64", "--threads", "-1"], "train.threads"),
    ],
    "report": [
        (["report", "runs/nothere"], "runs/nothere"),
        (["report", R, "--format", "xml"], "--format"),
        (["report", R, "--top", "0"], "--top"),
    ],
    "init": [
        (["init", "--model", "nope", "x.yaml"], "--model"),
        (["init", S], S),  # exists
    ],
    "show-config": [
        (["show-config", S, "model.width=-1"], "model.width"),
        (["show-config", "no-such.yaml"], "no-such.yaml"),
    ],
    "coord-check": [
        (["coord-check", S, "--depths", "3,5"], "--depths"),
        (["coord-check", S, "--depths", "2,x"], "--depths"),
        (["coord-check", S, "--experts", "2,4"], "--experts"),  # the gpt family has no experts
        (["coord-check", S, "--compare", "mup"], "--compare"),
        (["coord-check", S, "--seeds", "0"], "--seeds"),
        (["coord-check", S, "model.depth=0"], "model.depth"),
    ],
    "inspect": [
        (["inspect", S, "--to", "widht=1024"], "--to widht"),
        (["inspect", S, "--format", "xml"], "--format"),
        (["inspect", S, "--to", "model.parametrization=sp"], "--to model.parametrization"),
    ],
    "sweep": [
        (["sweep", S, "--param", "nope"], "--param"),
        (["sweep", S, "--widths", "64,abc"], "--widths"),
        (["sweep", S, "--values", "-1,1"], "--values"),
        (["sweep", S, "--workers", "0"], "--workers"),
        (["sweep", S, "--compare", "xx"], "--compare"),
        (["sweep", S, "--max-drift", "0"], "--max-drift"),
    ],
    "laws": [
        (["laws", "runs/nothere", "--steps", "1"], "runs/nothere"),
        (["laws", R], "--steps"),  # no multiples
        (["laws", R, "--steps", "a,b"], "--steps"),
        (["laws", R, "--steps", "0.5,1", "--seeds", "0"], "--seeds"),
    ],
    "export": [
        (["export", "runs/nothere", "--to", "width=128"], "runs/nothere"),
        (["export", R, "--to", "widht=1024"], "--to widht"),
        (["export", R, "--to", "width=64", "--format", "xml"], "--format"),
        (["export", R, "--to", "width=64", "-o", "no-such-folder/x.py"], "--out"),
        (["export", S, "--to", "width=64"], S),  # a spec, not a run dir
    ],
    "data": [
        (["data", "prepare", "missing.txt", "--tokenizer", "bpe", "--out", "d"], "missing.txt"),
        (
            ["data", "prepare", "a-file", "--tokenizer", "bpe", "--vocab-size", "0", "--out", "d"],
            "--vocab-size",
        ),
    ],
}
ALL = [(args, key) for cases in CASES.values() for args, key in cases]


def _probe(args: list[str], cwd) -> tuple[dict, str]:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"},
        timeout=120,
    )
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


@pytest.mark.parametrize("args, key", ALL, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_a_bad_argument_answers_in_one_line_before_torch_loads(place, args, key):
    result, err = _probe(args, place)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert result["code"] == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], err
    assert "Traceback" not in err
    assert not result["torch"], f"mutune {' '.join(args)} loaded torch before answering: {err}"


def test_the_probe_sees_torch_where_a_command_runs(place):
    """The same probe reports torch when the command goes on to plan (so the test above can fail)."""
    result, err = _probe(["transfer", R, "--to", "width=64", "--dry-run"], place)
    assert result["code"] == 0 and result["torch"], err


def test_every_command_has_cases():
    commands = set(typer.main.get_command(cli.app).commands)
    assert commands == set(CASES), commands ^ set(CASES)


# ---------------------------------------------------------------------------------------------
# The Python API names its arguments


def test_python_errors_name_the_argument_and_the_cli_the_option(place, monkeypatch):
    monkeypatch.chdir(place)
    spec = config.load_spec(place / S)
    cases = [
        (lambda: transfer.transfer(place / R, ["widht=1024"], dry_run=True), "to widht", "--to widht"),
        (lambda: sweep.prepare(spec, widths=[32, 0]), "widths", "--widths"),
        (lambda: sweep.prepare(spec, workers=0), "workers", "--workers"),
        (lambda: checks.coord_check(spec, depths=[3, 5]), "depths", "--depths"),
        (lambda: checks.coord_check(spec, along="experts", sizes=[2, 4]), "experts", "--experts"),
        (lambda: search.search(spec, run_dir=place / "a-file"), "run_dir", "--run-dir"),
    ]
    for call, key, option in cases:
        with pytest.raises(SpecError) as e:
            call()
        assert e.value.key == key, e.value
        assert for_cli(str(e.value)).startswith(f"{option}:")
    # a message that points at another argument names it as Python knows it
    changed = config.load_spec(place / S, ["train.steps=9", "search.n_trials=1"])
    with pytest.raises(SpecError) as e:
        search.search(changed, run_dir=place / R, transfer=False)
    assert "`run_dir`" in str(e.value) and "--run-dir" not in str(e.value)
    assert "--run-dir" in for_cli(str(e.value)) and "`run_dir`" not in for_cli(str(e.value))
    with pytest.raises(SpecError) as e:
        transfer.transfer(place / R, ["width=64"])
        transfer.transfer(place / R, ["width=64"])  # the folder holds a run now
    assert "`resume=True`" in str(e.value) and for_cli(str(e.value)).count("--resume") == 1


def test_for_cli_writes_lists_as_their_options():
    assert for_cli("to: give `to=['width=W']` (x)") == "--to: give --to width=W (x)"
    assert (
        for_cli("multiples.steps: e.g. `multiples.steps=[0.25, 0.5, 1]`")
        == "--steps: e.g. --steps 0.25,0.5,1"
    )
    assert for_cli("name: keep `name` and `force=True`") == "name: keep `name` and --force"
