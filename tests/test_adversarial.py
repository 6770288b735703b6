"""The adversarial user: bad input, faults and concurrency, through the CLI (issue 15).

The contract every case checks: exit code 2 and one line naming the key or file for a user error;
exit 130 for an interrupt, with the resume command on a line of its own; and for a fault, every
complete trial, best.yaml and checkpoint present before it still there and loadable after it (by
Optuna, by ``mutune report``, by ``torch.load``).

Fast cases run in-process. Fault injection (signals on real processes, a full tmpfs, a user without
write permission) is marked ``slow``; the default ``python -m pytest -q`` (and so ``.ci/run``) runs
those too, ``-m "not slow"`` skips them while developing.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.trial import TrialState

from mutune import cli
from mutune import study as study_mod
from mutune.errors import MutuneWarning

from .conftest import ROOT, TINY, write_spec
from .test_robustness import finish, mutune, wait_for

# ---------------------------------------------------------------------------------------------
# Helpers


def error_line(r) -> str:
    """The single stderr line of a refused command (the contract: one line, no traceback)."""
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, r.err
    return errors[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(run: Path) -> dict[str, str]:
    """Hashes of what a search left: the files a second study must not overwrite."""
    return {n: sha(run / n) for n in ("best.yaml", "trials.csv", "config.yaml") if (run / n).exists()}


def load(run: Path, name: str = "tiny") -> optuna.Study:
    """The study (of a run dir, or in a journal file) as Optuna loads it, read-only: a torn tail is
    read past, not repaired."""
    journal = run / "study.journal" if run.is_dir() else run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MutuneWarning)
        storage = study_mod.open_storage(str(journal), repair=False)
    return optuna.load_study(study_name=name, storage=storage)


def complete_trials(run: Path, name: str = "tiny") -> dict[int, float]:
    return {t.number: t.value for t in load(run, name).get_trials() if t.state == TrialState.COMPLETE}


def finished(run: Path, name: str = "tiny") -> int:
    return study_mod.count(load(run))[0]


def no_temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A finished tiny search (3 trials), made once; tests copy it (``searched``)."""
    root = tmp_path_factory.mktemp("pristine")
    write_spec(root / "tiny.yaml", TINY)
    # in a process of its own, as a user's would be: its trials' worker pid is gone afterwards
    code, out, err = finish(mutune("-q", "search", "tiny.yaml", "--no-transfer", cwd=root))
    assert code == 0, err
    return root


@pytest.fixture
def searched(pristine, workdir) -> Path:
    """A copy of the finished tiny search in this test's working directory: runs/tiny, tiny.yaml."""
    shutil.copytree(pristine / "runs", workdir / "runs")
    shutil.copy(pristine / "tiny.yaml", workdir / "tiny.yaml")
    return workdir / "runs" / "tiny"


# ---------------------------------------------------------------------------------------------
# Unreadable and silently accepted specs


@pytest.mark.parametrize(
    "content, words",
    [
        (b"name: t\xe9\n", ["UTF-8", "line 1"]),  # a Latin-1 byte
        ("name: t\n".encode("utf-16"), ["UTF-8", "UTF-16"]),
        (bytes(range(128, 256)) * 3, ["UTF-8"]),  # random bytes
        (b"name: d\ntrain:\n  steps: 3\n  steps: 4\n", ["train.steps", "duplicate", "line 4", "line 3"]),
        (b"name: d\nname: e\n", ["name:", "duplicate"]),
        (b"model: {width: 64, width: 32}\n", ["model.width", "duplicate"]),
    ],
    ids=["latin1", "utf16", "random-bytes", "duplicate-nested", "duplicate-top", "duplicate-flow"],
)
def test_unreadable_or_ambiguous_spec_is_named(run_cli, workdir, content, words):
    path = workdir / "bad.yaml"
    path.write_bytes(content)
    r = run_cli("search", path, "--no-transfer")
    assert r.code == 2, r
    line = error_line(r)
    assert "bad.yaml" in line
    for w in words:
        assert w in line, line
    assert not (workdir / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "override, key",
    [
        ("hparams.beta2=2.0", "hparams.beta2"),
        ("hparams.beta1=1.0", "hparams.beta1"),
        ("hparams.momentum=-0.1", "hparams.momentum"),
        ("hparams.lr=.nan", "hparams.lr"),
        ("hparams.init_std=.inf", "hparams.init_std"),
        ("hparams.alpha_out=0", "hparams.alpha_out"),
        ("train.max_loss=.nan", "train.max_loss"),
        ("train.eps=-1e-8", "train.eps"),
        ("seed=-1", "seed"),
        ("search.seed=-3", "search.seed"),
        ("model.n_head=0", "model.n_head"),
        ("data.val_fraction=.nan", "data.val_fraction"),
        ("search.space.beta1={type: uniform, low: 0.5, high: 1.0}", "search.space.beta1.high"),
        ("search.space.beta2={type: categorical, choices: [0.9, 1.5]}", "search.space.beta2.choices[1]"),
        ("search.space.lr={type: uniform, low: 0.0, high: 0.1}", "search.space.lr.low"),
        ("search.space.lr.high=.inf", "search.space.lr.high"),
        ("target.width=-8", "target.width"),
        ("target.overrides={train.max_loss: .nan}", "target.overrides.train.max_loss"),
    ],
)
def test_every_field_knows_its_valid_range(run_cli, tiny_spec, override, key):
    r = run_cli("search", tiny_spec, override, "--no-transfer")
    assert r.code == 2, r
    line = error_line(r)
    assert line.startswith(f"error: {key}:"), r.err
    assert ("finite" if "nan" in override or "inf" in override else "must be") in line  # why, not a guess
    assert "different spec" not in line


def test_a_searched_range_in_the_spec_file_is_checked_too(run_cli, workdir):
    spec = write_spec(
        workdir / "b.yaml",
        {**TINY, "search": {"n_trials": 2, "space": {"beta1": {"type": "uniform", "low": 0.8, "high": 1.0}}}},
    )
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 2 and error_line(r).startswith("error: search.space.beta1.high:")


def test_to_values_are_range_checked(run_cli, searched):
    r = run_cli("transfer", searched, "--to", "width=64", "--to", "train.max_loss=.nan", "--dry-run")
    assert r.code == 2 and error_line(r).startswith("error: --to train.max_loss:")
    assert "finite" in r.err


def test_best_yaml_hparams_are_range_checked(run_cli, searched):
    best = yaml.safe_load((searched / "best.yaml").read_text())
    best["hparams"]["beta2"] = 2.0
    (searched / "best.yaml").write_text(yaml.safe_dump(best))
    r = run_cli("transfer", searched, "--to", "width=64", "--dry-run")
    assert r.code == 2 and "best.yaml: hparams.beta2" in error_line(r)


def test_smoke_keeps_explicit_overrides(run_cli, workdir, tiny_spec):
    r = run_cli("show-config", tiny_spec, "search.n_trials=6", "train.steps=20", "--smoke")
    assert r.code == 0
    shown = yaml.safe_load(r.out)
    assert shown["search"]["n_trials"] == 6 and shown["train"]["steps"] == 20  # explicit values win
    assert shown["model"]["width"] == 32  # what was not given explicitly is the smoke variant
    r = run_cli("search", tiny_spec, "search.n_trials=4", "--smoke", "--no-transfer")
    assert r.code == 0, r
    assert len((workdir / "runs" / "tiny-smoke" / "trials.csv").read_text().splitlines()) == 1 + 4


def test_sweep_smoke_refuses_an_explicit_value_it_would_replace(run_cli, tiny_spec):
    r = run_cli("sweep", tiny_spec, "train.steps=30", "--smoke")
    assert r.code == 2 and error_line(r).startswith("error: train.steps:")
    r = run_cli("sweep", tiny_spec, "--widths", "32,48", "--smoke")
    assert r.code == 2 and error_line(r).startswith("error: --widths:")


def test_base_width_above_width_warns(run_cli, tiny_spec):
    r = run_cli("search", tiny_spec, "model.base_width=64", "search.n_trials=1", "--no-transfer")
    assert r.code == 0, r
    warn = [ln for ln in r.err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "model.base_width (64)" in warn[0] and "model.width (32)" in warn[0]


# ---------------------------------------------------------------------------------------------
# Unreadable data and checkpoints


@pytest.mark.parametrize("size", [1001, 0])
def test_token_file_that_is_not_whole_tokens(run_cli, tiny_spec, workdir, size):
    (workdir / "tok.bin").write_bytes(b"\x01" * size)
    args = ["data.corpus=tokens", "data.path=tok.bin", "data.vocab_size=10"]
    r = run_cli("search", tiny_spec, *args, "--no-transfer")
    assert r.code == 2
    line = error_line(r)
    assert line.startswith("error: data.path:") and "tok.bin" in line and "2 bytes" in line


def _partial_target(run: Path, steps: int = 20) -> Path:
    """A finished tiny target, then made resumable: its result removed."""
    args = ["-q", "transfer", str(run), "--to", "width=48", "--to", f"train.steps={steps}"]
    assert cli.main(args) == 0
    target = run / f"target-width48-steps{steps}"
    (target / "result.yaml").unlink()
    return target


@pytest.mark.parametrize("damage", ["truncated", "text", "foreign-torch-file"])
def test_a_damaged_checkpoint_is_named_on_resume(run_cli, searched, damage):
    target = _partial_target(searched)
    ckpt = target / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "text":
        ckpt.write_text("not a checkpoint\n")
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    before = sha(ckpt)
    r = run_cli("transfer", searched, "--to", "width=48", "--to", "train.steps=20", "--resume")
    assert r.code == 2, r
    line = error_line(r)
    assert "checkpoint.pt" in line and "checkpoint" in line.split("checkpoint.pt", 1)[1]
    assert sha(ckpt) == before  # left for the user to inspect


# ---------------------------------------------------------------------------------------------
# The user's own code failing

FACTORY = """
import sys
from torch import nn

class Model(nn.Module):
    def __init__(self, width, vocab_size):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab_size, width), nn.Linear(width, vocab_size)

    def forward(self, idx):
        raise ValueError("my forward is broken")

def raises(width, vocab_size, alpha_attn=1.0):
    raise RuntimeError("my factory is broken")

def exits(width, vocab_size, alpha_attn=1.0):
    sys.exit(3)

def bad_forward(width, vocab_size, alpha_attn=1.0):
    return Model(width, vocab_size)
"""


@pytest.mark.parametrize(
    "function, words, theirs",
    [
        ("raises", ["RuntimeError", "my factory is broken"], RuntimeError),
        ("exits", ["sys.exit(3)"], SystemExit),
        ("bad_forward", ["forward", "ValueError", "my forward is broken"], ValueError),
    ],
)
def test_the_users_factory_failing_is_their_error(run_cli, workdir, function, words, theirs):
    (workdir / "adv_factory_mod.py").write_text(FACTORY)
    sys.modules.pop("adv_factory_mod", None)
    model = {k: v for k, v in TINY["model"].items() if k != "head_dim"}  # (a key of the gpt family)
    tiny_spec = write_spec(workdir / "tiny.yaml", {**TINY, "model": {**model, "family": "factory"}})
    args = [f"model.factory=adv_factory_mod:{function}", "--no-transfer"]
    r = run_cli("search", tiny_spec, *args)
    assert r.code == 2, r
    line = error_line(r)
    assert line.startswith("error: model.factory:")
    for w in words:
        assert w in line
    with pytest.raises(Exception) as info:  # --debug: the traceback, with the user's own chained
        cli.main(["--debug", "search", str(tiny_spec), *args])
    assert isinstance(info.value.__cause__, theirs)


# ---------------------------------------------------------------------------------------------
# Storage URLs and run dirs


@pytest.mark.parametrize(
    "url, words",
    [
        ("not a url", ["search.storage", "neither a database URL"]),
        ("sqlite:///no/such/folder/x.db", ["search.storage", "no/such/folder", "does not exist"]),
        ("postgresql://someone:secret@127.0.0.1:1/none", ["search.storage", "127.0.0.1"]),
    ],
    ids=["not-a-url", "sqlite-missing-folder", "postgres-unreachable"],
)
def test_storage_url_errors_are_one_line(run_cli, tiny_spec, workdir, url, words):
    r = run_cli("search", tiny_spec, "--storage", url, "--no-transfer")
    assert r.code == 2, r
    line = error_line(r)
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, r.err
    for w in words:
        assert w in line, line
    assert "secret" not in r.err  # a password is never printed
    assert not (workdir / "not a url").exists()


def test_run_dir_that_is_a_file(run_cli, tiny_spec, workdir):
    (workdir / "afile").write_text("mine\n")
    r = run_cli("search", tiny_spec, "--run-dir", workdir / "afile", "--no-transfer")
    assert r.code == 2 and error_line(r).startswith("error: --run-dir:")
    assert (workdir / "afile").read_text() == "mine\n"


@pytest.mark.parametrize(
    "override, key",
    [
        ("name=other", "name"),
        ("search.study_name=other", "search.study_name"),
        ("search.storage=sqlite:///other.db", "search.storage"),
    ],
)
def test_a_run_dir_belongs_to_one_study(run_cli, searched, override, key):
    before, trials = snapshot(searched), complete_trials(searched)
    r = run_cli("search", "tiny.yaml", override, "--run-dir", searched, "search.n_trials=1", "--no-transfer")
    assert r.code == 2, r
    assert error_line(r).startswith(f"error: {key}:") and str(searched) in r.err
    assert snapshot(searched) == before  # best.yaml, trials.csv and config.yaml untouched
    assert complete_trials(searched) == trials


# ---------------------------------------------------------------------------------------------
# The journal: torn tails are repaired, damaged middles refused


def _tear(journal: Path, cut: int) -> bytes:
    data = journal.read_bytes()
    journal.write_bytes(data[:-cut])
    return journal.read_bytes()


@pytest.mark.parametrize("damage", ["torn-last-record", "garbage-last-line"])
def test_a_torn_journal_is_repaired_before_anything_is_appended(run_cli, searched, damage):
    journal = searched / "study.journal"
    if damage == "torn-last-record":
        damaged = _tear(journal, 30)
    else:
        damaged = journal.read_bytes() + b"\x00\x00garbage{not json\n"
        journal.write_bytes(damaged)
    readable = complete_trials(searched)  # what Optuna could still read before the repair
    assert readable
    r = run_cli("report", searched, "--format", "json", "--no-plots")  # read-only: reports, cuts nothing
    assert r.code == 0, r
    assert [ln for ln in r.err.splitlines() if ln.startswith("warning:") and "study.journal" in ln]
    assert journal.read_bytes() == damaged
    r = run_cli("search", "tiny.yaml", "search.n_trials=5", "--no-transfer")
    assert r.code == 0, r
    warning = [ln for ln in r.err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "study.journal" in warning[0] and ".bak" in warning[0]
    (backup,) = searched.glob("study.journal.*.bak")
    assert backup.read_bytes() == damaged  # byte for byte
    after = complete_trials(searched)  # Optuna loads the repaired study
    assert {n: after[n] for n in readable} == readable  # every trial complete before is kept as it was
    assert finished(searched) == 5
    assert run_cli("report", searched, "--format", "json", "--no-plots").code == 0
    assert run_cli("transfer", searched, "--to", "width=64", "--dry-run").code == 0  # best.yaml loads


def test_a_damaged_middle_of_the_journal_is_refused_not_cut(run_cli, searched):
    journal = searched / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[5] = b"this line is not json\n"
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()
    for args in (["search", "tiny.yaml", "--no-transfer"], ["report", searched, "--no-plots"]):
        r = run_cli(*args)
        assert r.code == 2, r
        line = error_line(r)
        assert "study.journal" in line and "line 6" in line
    assert journal.read_bytes() == before and not list(searched.glob("*.bak"))


def test_repair_never_cuts_a_file_that_is_not_a_journal(run_cli, tiny_spec, workdir):
    (workdir / "notes.log").write_text("my own notes, not a journal\n")
    r = run_cli("search", tiny_spec, "--storage", "notes.log", "--no-transfer")
    assert r.code == 2 and "notes.log" in error_line(r)
    assert (workdir / "notes.log").read_text() == "my own notes, not a journal\n"


# ---------------------------------------------------------------------------------------------
# Sizes that cannot fit


def test_a_target_that_cannot_fit_is_refused_before_allocating(run_cli, searched):
    r = run_cli("transfer", searched, "--to", "width=1000000")
    assert r.code == 2, r
    line = error_line(r)
    assert line.startswith("error: train.memory_check:") and "TiB" in line and "--force" in line
    assert not list(searched.glob("target-*"))  # nothing was written or allocated
    assert run_cli("transfer", searched, "--to", "width=1000000", "--dry-run").code == 0  # plans still work


def test_a_proxy_that_cannot_fit_is_refused_before_the_first_trial(run_cli, tiny_spec, workdir):
    r = run_cli("search", tiny_spec, "model.width=1000000", "model.base_width=1000000", "--no-transfer")
    assert r.code == 2, r
    assert error_line(r).startswith("error: train.memory_check:")
    assert not (workdir / "runs").exists()


def test_memory_limit_and_force(run_cli, searched, monkeypatch):
    monkeypatch.setenv("MUTUNE_MEMORY_LIMIT", "64KiB")  # what a machine shared with others allows us
    args = ["transfer", searched, "--to", "width=48", "--to", "train.steps=4"]
    r = run_cli(*args)
    assert r.code == 2 and "MUTUNE_MEMORY_LIMIT" in error_line(r)
    assert not list(searched.glob("target-*"))
    r = run_cli(*args, "--force")  # the estimate is an estimate: --force tries anyway
    assert r.code == 0, r
    plan = yaml.safe_load((searched / "target-width48-steps4" / "config.yaml").read_text())
    assert plan["train"]["memory_check"] is False  # recorded
    monkeypatch.setenv("MUTUNE_MEMORY_LIMIT", "lots")
    r = run_cli("transfer", searched, "--to", "width=64", "--to", "train.steps=4")
    assert r.code == 2 and error_line(r).startswith("error: MUTUNE_MEMORY_LIMIT:")


# ---------------------------------------------------------------------------------------------
# Signals (slow: real processes)

SLOW_TARGET = {
    **TINY,
    "train": {**TINY["train"], "checkpoint_every": 0},
    "search": {"n_trials": 2},
}


@pytest.fixture
def slow_proxy(workdir) -> Path:
    """A finished 2-trial search whose target (width 48) checkpoints only at the end."""
    write_spec(workdir / "tiny.yaml", SLOW_TARGET)
    code, out, err = finish(mutune("-q", "search", "tiny.yaml", "--no-transfer", cwd=workdir))
    assert code == 0, err
    return workdir / "runs" / "tiny"


def _steps_logged(target: Path) -> int:
    m = target / "metrics.csv"
    if not m.exists():
        return 0
    rows = [ln.split(",") for ln in m.read_text().splitlines()[1:]]
    return max((int(r[0]) for r in rows if r and r[0].isdigit()), default=0)


@pytest.mark.slow
def test_sigterm_during_a_target_writes_a_checkpoint_then_resumes_bit_for_bit(slow_proxy, workdir):
    twin = workdir / "runs" / "twin"
    shutil.copytree(slow_proxy, twin)
    to = ["--to", "width=48", "--to", "train.steps=400"]
    p = mutune("transfer", slow_proxy, *to, cwd=workdir)
    target = slow_proxy / "target-width48-steps400"
    wait_for(lambda: _steps_logged(target) >= 20, timeout=180)
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p)
    assert code == 130, err
    assert "Traceback" not in err
    state = torch.load(target / "checkpoint.pt", weights_only=False)  # written on the way out
    assert 20 <= state["step"] < 400
    hint = err.splitlines()
    at = next(i for i, ln in enumerate(hint) if "Resume with:" in ln)
    assert (
        str(target) in hint[at] and f"step {state['step']}" in hint[at]
    )  # the target folder, not the run dir
    command = shlex.split(hint[at + 1])  # on a line of its own, unwrapped
    assert command[:2] == ["mutune", "transfer"] and command[-1] == "--resume"
    assert not no_temp_files(target)
    code, out, err = finish(mutune(*command[1:], cwd=workdir))  # the printed command, pasted
    assert code == 0, err
    code, out, err = finish(mutune("transfer", twin, *to, cwd=workdir))
    assert code == 0, err
    curve = [c["val_loss"] for c in yaml.safe_load((target / "result.yaml").read_text())["curve"]]
    twin_curve = yaml.safe_load((twin / "target-width48-steps400" / "result.yaml").read_text())["curve"]
    assert curve == [c["val_loss"] for c in twin_curve]  # lost at most the step it was in


@pytest.mark.slow
@pytest.mark.parametrize("gap", [0.0, 0.05, 0.3])
def test_sigint_twice_quickly_exits_130_without_a_traceback(workdir, gap):
    slow = {**TINY, "train": {**TINY["train"], "steps": 300, "eval_every": 100}, "search": {"n_trials": 3}}
    spec = write_spec(workdir / "tiny.yaml", slow)
    run = workdir / "runs" / "tiny"
    p = mutune("search", spec, "--no-transfer", cwd=workdir)
    wait_for(lambda: (run / "trials.csv").exists(), timeout=180)  # a trial finished, the next one runs
    p.send_signal(signal.SIGINT)
    time.sleep(gap)
    p.send_signal(signal.SIGINT)
    code, out, err = finish(p)
    assert code == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "Resume with:" in err
    trials = complete_trials(run)
    assert len(trials) >= 1  # what finished is kept, loadable


@pytest.mark.slow
def test_two_searches_one_target_folder_one_writer(workdir):
    spec = {**SLOW_TARGET, "target": {"width": 48, "overrides": {"train.steps": 3000}}}
    write_spec(workdir / "tiny.yaml", spec)
    first = mutune("search", "tiny.yaml", cwd=workdir)
    target = workdir / "runs" / "tiny" / "target-width48-steps3000"
    wait_for(lambda: _steps_logged(target) >= 10, timeout=240)  # the first one trains the target
    code, out, err = finish(mutune("search", "tiny.yaml", cwd=workdir))
    assert code == 2, err
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    where = "runs/tiny/target-width48-steps3000"
    assert len(line) == 1 and where in line[0] and f"pid {first.pid}" in line[0]
    first.send_signal(signal.SIGTERM)
    code, out, err = finish(first)
    assert code == 130 and where in err
    rows = pd.read_csv(target / "metrics.csv")
    train_steps = rows.dropna(subset=["train_loss"]).step.tolist()
    assert train_steps == sorted(set(train_steps))  # one writer: no interleaved rows


def test_the_summary_counts_what_the_study_holds(run_cli, searched):
    """A trial another live process is running is counted, and said, in the final line."""
    storage = study_mod.open_storage(str(searched / "study.journal"))
    study = optuna.load_study(study_name="tiny", storage=storage)
    trial = study.ask()  # as another search on this machine would, still running
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    r = run_cli("search", "tiny.yaml", "search.n_trials=4", "--no-transfer")
    assert r.code == 0, r
    assert "of 3 finished (1 still running in another process)" in r.out


# ---------------------------------------------------------------------------------------------
# A full disk (a small tmpfs) and a user who may not write


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs, mounted for the test (root only; skipped with the reason otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the full-disk test runs as root in CI here)")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system holding ``folder`` until ``leave`` bytes are free."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_keeps_the_last_one(run_cli, slow_proxy, workdir, tmpfs):
    run = tmpfs / "tiny"
    shutil.copytree(slow_proxy, run)
    twin = workdir / "runs" / "twin"
    shutil.copytree(slow_proxy, twin)
    to = ["--to", "width=48", "--to", "train.steps=200", "--to", "train.checkpoint_every=10"]
    p = mutune("transfer", run, *to, cwd=workdir)  # stop it after its first checkpoints
    target = run / "target-width48-steps200"
    wait_for(lambda: (target / "checkpoint.pt").exists(), timeout=180)
    p.send_signal(signal.SIGTERM)
    assert finish(p)[0] == 130
    ckpt = target / "checkpoint.pt"
    before, step = sha(ckpt), torch.load(ckpt, weights_only=False)["step"]
    best, trials = sha(run / "best.yaml"), complete_trials(run)
    filler = fill(tmpfs, leave=0)  # not even room for plan.yaml
    r = run_cli("transfer", run, *to, "--resume")
    assert r.code == 2, r
    assert "plan.yaml" in error_line(r) and "no space left" in error_line(r)
    assert not no_temp_files(run) and sha(ckpt) == before
    filler.unlink()
    filler = fill(tmpfs, leave=64 * 1024)  # room for metrics rows, not for a checkpoint
    r = run_cli("transfer", run, *to, "--resume")
    assert r.code == 2, r
    line = error_line(r)
    assert "checkpoint.pt" in line and "no space left" in line
    assert sha(ckpt) == before and torch.load(ckpt, weights_only=False)["step"] == step  # not overwritten
    assert not no_temp_files(run)  # no leftovers keeping the disk full
    assert sha(run / "best.yaml") == best and complete_trials(run) == trials
    filler.unlink()
    r = run_cli("transfer", run, *to, "--resume")
    assert r.code == 0, r
    r = run_cli("transfer", twin, *to)
    assert r.code == 0, r
    mine = yaml.safe_load((target / "result.yaml").read_text())["curve"]
    theirs = yaml.safe_load((twin / target.name / "result.yaml").read_text())["curve"]
    assert [c["val_loss"] for c in mine] == [c["val_loss"] for c in theirs]


@pytest.mark.slow
def test_full_disk_during_a_search_loses_no_trial(run_cli, searched, tmpfs):
    run = tmpfs / "tiny"
    shutil.copytree(searched, run)
    trials = complete_trials(run)
    filler = fill(tmpfs, leave=6 * 1024)
    r = run_cli("search", "tiny.yaml", "--run-dir", run, "search.n_trials=12", "--no-transfer")
    assert r.code == 2, r
    line = error_line(r)
    assert "no space left" in line and str(run) in line
    assert not no_temp_files(run)
    assert {n: v for n, v in complete_trials(run).items() if n in trials} == trials
    prov = yaml.safe_load((run / "best.yaml").read_text())["provenance"]  # whole, and true to the study
    assert complete_trials(run)[prov["trial_number"]] == prov["loss"]
    filler.unlink()
    r = run_cli("search", "tiny.yaml", "--run-dir", run, "search.n_trials=12", "--no-transfer")
    assert r.code == 0, r
    after = complete_trials(run)
    assert {n: after[n] for n in trials} == trials and finished(run) == 12
    assert run_cli("report", run, "--format", "json", "--no-plots").code == 0


@pytest.mark.slow
def test_full_disk_under_the_journal_then_resume(workdir, tmpfs):
    """The journal alone on a full disk: Optuna's append fails mid-trial (its own error is
    "AssertionError: Should not reach." over the ENOSPC); the user sees the journal and the cause."""
    journal = tmpfs / "study.journal"
    write_spec(workdir / "tiny.yaml", TINY)
    args = ["search", "tiny.yaml", "--storage", str(journal), "--no-transfer"]
    code, out, err = finish(mutune(*args, cwd=workdir))
    assert code == 0, err
    trials = complete_trials(journal)
    filler = fill(tmpfs, leave=0)
    code, out, err = finish(mutune(*args, "search.n_trials=8", cwd=workdir))
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(journal) in errors[0] and "no space left" in errors[0], err
    assert "Traceback" not in err
    assert {n: v for n, v in complete_trials(journal).items() if n in trials} == trials
    torn = not journal.read_bytes().endswith(b"\n")  # (here: the write stopped at a page boundary)
    filler.unlink()
    code, out, err = finish(mutune(*args, "search.n_trials=8", cwd=workdir))
    assert code == 0, err
    if torn:  # repaired before the first append, with its backup
        assert "dropped" in err and list(tmpfs.glob("study.journal.*.bak"))
    assert {n: complete_trials(journal)[n] for n in trials} == trials and finished(journal) == 8
    code, out, err = finish(mutune("report", "runs/tiny", "--format", "json", "--no-plots", cwd=workdir))
    assert code == 0, err


def _as_nobody() -> list[str] | None:
    """A command prefix running as uid nobody, who may read everything (to run this Python) but write
    only where permissions allow; None when this machine cannot do that."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    prefix = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import os; print(os.getuid())"], capture_output=True
    )
    return prefix if probe.returncode == 0 and probe.stdout.strip() == b"65534" else None


@pytest.mark.slow
def test_a_run_dir_the_user_may_not_write(searched, request):
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("needs root and setpriv to run the CLI as a user without write permission")
    # the user's own folder (world-writable, under /tmp: pytest's own is root-only), holding a run
    # dir that root made (0755): the user may read it but not write in it
    home = Path(tempfile.mkdtemp(prefix="mutune-nobody-"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    home.chmod(0o777)
    shutil.copytree(searched.parent, home / "runs")
    shutil.copy(searched.parents[1] / "tiny.yaml", home / "tiny.yaml")
    for p in [home / "runs", *(home / "runs").rglob("*"), home / "tiny.yaml"]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    run = home / "runs" / "tiny"
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT), "HOME": str(home), "MPLCONFIGDIR": str(home)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    before, trials, journal = snapshot(run), complete_trials(run), sha(run / "study.journal")

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        cmd = [*prefix, sys.executable, "-m", "mutune", *args]
        return subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=300)

    for args in (
        ["search", "tiny.yaml", "search.n_trials=5", "--no-transfer"],
        ["transfer", "runs/tiny", "--to", "width=48", "--to", "train.steps=4"],
    ):
        p = as_nobody(*args)
        assert p.returncode == 2, p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "permission denied" in errors[0] and "runs/tiny" in errors[0], p.stderr
        assert "Traceback" not in p.stderr
    assert snapshot(run) == before and sha(run / "study.journal") == journal
    assert complete_trials(run) == trials and not no_temp_files(run)
    p = as_nobody("report", "runs/tiny", "--format", "json", "--no-plots", "--out", str(home / "out"))
    assert p.returncode == 0, p.stderr  # reading needs no write permission


# =============================================================================================
# Round 3 (issue 22): concurrent writers, exact resume, no code from run files, bounded input, and
# a plan a real target can use. Each case through the CLI: exit code, one line, no traceback, and
# what was there before still loadable.


def only_error(r, key: str) -> str:
    """The one error line of a refused command, which names ``key`` first."""
    assert r.code == 2, r
    line = error_line(r)
    assert line.startswith(f"error: {key}"), line
    return line


def loadable(run: Path) -> None:
    """Everything a finished search left still loads: the study, best.yaml (as a transfer plans from
    it), the report."""
    assert complete_trials(run)
    assert cli.main(["-q", "transfer", str(run), "--to", "width=48", "--dry-run"]) == 0
    assert cli.main(["-q", "report", str(run), "--format", "json", "--no-plots"]) == 0


# ---------------------------------------------------------------------------------------------
# 5. Run dirs stay inside what the user named


@pytest.mark.parametrize(
    "args, key",
    [
        (["name=.."], "name"),
        (["name=."], "name"),
        (["name=..."], "name"),
        (["name=a/b"], "name"),
        (["name=a\\b"], "name"),
        ([f"name={'n' * 300}"], "name"),
        (["--run-dir", ""], "--run-dir"),
        (["--run-dir", "x" * 300], "--run-dir"),
    ],
    ids=["dotdot", "dot", "dots", "slash", "backslash", "300-chars", "empty-run-dir", "300-char-run-dir"],
)
def test_a_run_dir_stays_inside_what_the_user_named(run_cli, workdir, tiny_spec, args, key):
    (workdir / "best.yaml").write_text("mine\n")  # the user's own files, where `name: ..` used to write
    (workdir / "trials.csv").write_text("mine\n")
    r = run_cli("search", tiny_spec, *args, "--no-transfer")
    only_error(r, key)
    assert (workdir / "best.yaml").read_text() == (workdir / "trials.csv").read_text() == "mine\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["best.yaml", "tiny.yaml", "trials.csv"]


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_an_emptied_journal_is_refused_not_replaced(run_cli, searched, damage):
    journal = searched / "study.journal"
    if damage == "emptied":
        journal.write_bytes(b"")
    else:
        journal.unlink()
    before = snapshot(searched)
    r = run_cli("search", "tiny.yaml", "--no-transfer")
    line = only_error(r, "runs/tiny/study.journal:")  # (the run dir as the command named it)
    assert "runs/tiny/best.yaml" in line and "backup" in line
    assert snapshot(searched) == before  # best.yaml and trials.csv not overwritten by a new study
    assert not journal.exists() or journal.read_bytes() == b""  # nothing appended


# ---------------------------------------------------------------------------------------------
# 6. Damaged files: one line naming the file, exit 2; never "internal error", never a default


def _best(run: Path) -> dict:
    return yaml.safe_load((run / "best.yaml").read_text())


@pytest.mark.parametrize(
    "damage, where",
    [
        (lambda d: ["a", "list"], "best.yaml"),
        (lambda d: "a string", "best.yaml"),
        (
            lambda d: {**d, "provenance": {**d["provenance"], "search_flops": "lots"}},
            "provenance.search_flops",
        ),
        (lambda d: {**d, "provenance": {**d["provenance"], "trial_number": [1]}}, "provenance.trial_number"),
        (lambda d: {**d, "provenance": {**d["provenance"], "loss": ".nan"}}, "provenance.loss"),
        (lambda d: {**d, "laws": {"steps": {"exponent": "x", "points": []}}}, "laws.steps.exponent"),
        (lambda d: {**d, "laws": {"steps": {"exponent": -0.1, "points": [{"multiple": 0}]}}}, "laws.steps"),
        (
            lambda d: {**d, "hparams": {k: v for k, v in d["hparams"].items() if k != "alpha_out"}},
            "hparams.alpha_out",
        ),
        (lambda d: {**d, "hparams": {"lr": 0.01}}, "hparams.init_std"),
    ],
    ids=[
        "list",
        "string",
        "flops-text",
        "trial-list",
        "loss-nan",
        "law-exponent",
        "law-multiple",
        "hp-missing",
        "hps-missing",
    ],
)
def test_a_damaged_best_yaml_is_named(run_cli, searched, damage, where):
    (searched / "best.yaml").write_text(yaml.safe_dump(damage(_best(searched))))
    for extra in (
        ["--dry-run"],
        ["--to", "train.steps=4"],
    ):  # a run too: a missing HP never trains at a default
        r = run_cli("transfer", searched, "--to", "width=48", *extra)
        assert r.code == 2, r
        line = error_line(r)
        assert str(searched / "best.yaml") in line and where in line, line
    assert not list(searched.glob("target-*"))


@pytest.mark.parametrize(
    "text, where",
    [
        ("- a\n- list\n", "config.yaml"),
        (None, "config.yaml: train.steps"),
    ],
    ids=["list", "wrong-type"],
)
def test_a_damaged_config_yaml_is_named(run_cli, searched, text, where):
    if text is None:
        doc = yaml.safe_load((searched / "config.yaml").read_text())
        doc["train"]["steps"] = "many"
        text = yaml.safe_dump(doc)
    (searched / "config.yaml").write_text(text)
    for args in (["transfer", searched, "--to", "width=48", "--dry-run"], ["report", searched, "--no-plots"]):
        r = run_cli(*args)
        assert r.code == 2, r
        assert where in error_line(r) and str(searched) in error_line(r)


@pytest.mark.parametrize("damage", ["list", "steps-text", "curve-text", "missing-loss"])
def test_a_damaged_result_yaml_is_named(run_cli, searched, damage):
    args = ["transfer", searched, "--to", "width=48", "--to", "train.steps=8"]
    assert run_cli(*args).code == 0
    result = searched / "target-width48-steps8" / "result.yaml"
    doc = yaml.safe_load(result.read_text())
    if damage == "list":
        doc = [1, 2]
    elif damage == "steps-text":
        doc["steps"] = "eight"
    elif damage == "curve-text":
        doc["curve"] = ["x"]
    else:
        del doc["final_val_loss"]
    result.write_text(yaml.safe_dump(doc))
    for cmd in (args + ["--resume"], ["report", searched, "--no-plots"]):
        r = run_cli(*cmd)
        assert r.code == 2, r
        assert str(result) in error_line(r)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00garbage\x00" * 50, b"not,the,header\n1,2,3\n"], ids=["binary", "header"]
)
def test_a_damaged_metrics_csv_is_named_on_resume(run_cli, searched, content):
    target = _partial_target(searched)
    (target / "metrics.csv").write_bytes(content)
    r = run_cli("transfer", searched, "--to", "width=48", "--to", "train.steps=20", "--resume")
    assert r.code == 2, r
    assert str(target / "metrics.csv") in error_line(r)
    assert (target / "metrics.csv").read_bytes() == content  # left for the user to look at


def test_a_journal_that_is_a_folder_is_named(run_cli, tiny_spec, workdir):
    (workdir / "runs" / "tiny" / "study.journal").mkdir(parents=True)
    r = run_cli("search", tiny_spec, "--no-transfer")
    assert r.code == 2 and "study.journal" in error_line(r) and "folder" in error_line(r)


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_journal_record_optuna_cannot_replay_is_named(run_cli, searched, where):
    journal = searched / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    bad = b'{"op_code":99,"worker_id":"x"}\n'
    at = 5 if where == "middle" else len(lines)
    lines.insert(at, bad)
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()
    for args in (["search", "tiny.yaml", "--no-transfer"], ["report", searched, "--no-plots"]):
        r = run_cli(*args)
        assert r.code == 2, r
        line = error_line(r)
        assert (
            "runs/tiny/study.journal" in line and f"line {at + 1}" in line and "unknown operation 99" in line
        )
    assert journal.read_bytes() == before


def test_save_plan_naming_a_folder_is_named(run_cli, searched, workdir):
    (workdir / "plans").mkdir()
    r = run_cli("transfer", searched, "--to", "width=48", "--dry-run", "--save-plan", workdir / "plans")
    only_error(r, "--save-plan")
    assert not list((workdir / "plans").iterdir())


# ---------------------------------------------------------------------------------------------
# 7. Bounds on everything a user can type, checked before any model is built (nothing is written)


@pytest.mark.parametrize(
    "args, key",
    [
        (["search.n_trials=null", "search.budget=1.0e+308", "target.width=64"], "search.budget"),
        (["search.n_trials=null", "search.budget=1000", "target.width=4096"], "search.budget"),  # 10^7 trials
        (["search.finalists=2", "search.rungs=[1.0e+300]"], "search.rungs[0]"),
        (["search.space.lr={type: int, low: 1, high: 1.0e+20}"], "search.space.lr.high"),
        (["seed=100000000000000000000"], "seed"),
        (["search.seed=5000000000", "search.sampler=tpe"], "search.seed"),
        (["model.width=1.0e+30"], "model.width"),
        (["model.depth=1.0e+30"], "model.depth"),
        (["search.n_trials=1.0e+30"], "search.n_trials"),
        (["train.steps=1.0e+30"], "train.steps"),
        (["search.rung_seeds=3"], "search.rung_seeds"),  # without a ladder it would be ignored
        (["search.finalists=2", "search.rung_seeds=1000000000"], "search.rung_seeds"),
        (["search.laws.steps=[0.5,1]", "search.laws.lr_step=2000"], "search.laws.lr_step"),
        (["search.laws.steps=[0.5,1]", "search.laws.lr_points=1000"], "search.laws.lr_points"),
        (["train.device=mps"], "train.device"),
        (["train.warmup_steps=9"], "train.warmup_steps"),
        (["data.corpus=text", "data.path=/dev/zero"], "data.path"),
        (["search.space={}"], "search.space"),
        (["data.path=notes.txt"], "data.path"),  # stdlib reads no path
        (["data.vocab_size=1000"], "data.vocab_size"),  # a byte corpus has 256
        (["target.width=64", "target.overrides={width: 128}"], "target.overrides.width"),
        (["train.micro_batch_size=3"], "train.micro_batch_size"),  # 4 sequences in parts of 3
    ],
    ids=[
        "budget-overflow",
        "budget-trials",
        "rungs-overflow",
        "int-range",
        "seed",
        "tpe-seed",
        "width",
        "depth",
        "n-trials",
        "steps",
        "rung-seeds-no-ladder",
        "rung-seeds-huge",
        "lr-step",
        "lr-points",
        "mps",
        "warmup",
        "dev-zero",
        "empty-space",
        "stdlib-path",
        "stdlib-vocab",
        "target-twice",
        "micro-batch",
    ],
)
def test_bounds_are_checked_before_anything_is_built(run_cli, workdir, tiny_spec, args, key):
    r = run_cli("search", tiny_spec, *args, "--no-transfer")
    line = only_error(r, f"{key}:")
    assert "different spec" not in line
    assert not (workdir / "runs").exists()  # refused before a run dir, a model or a trial


def test_a_yaml_alias_bomb_is_refused_at_once(workdir):
    """Nine lines that expand to 10^9 values: refused without expanding them (the old reader walked
    every one; the timeout below only guards against that hang, it measures nothing)."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, here = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{here}: &{here} [{', '.join(['*' + prev] * 10)}]")
    (workdir / "bomb.yaml").write_text("name: bomb\n" + "\n".join(levels) + "\n")
    p = mutune("search", "bomb.yaml", "--no-transfer", cwd=workdir)
    code, out, err = finish(p, timeout=120)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "bomb.yaml" in lines[0] and "alias" in lines[0] and "Traceback" not in err
    code, out, err = finish(mutune("search", "tiny.yaml", "seed=*x", "--no-transfer", cwd=workdir), 120)
    assert code == 2 and "Traceback" not in err  # (an alias in an override is its own value, refused)


@pytest.mark.parametrize("lr", ["nan", "-1", "0", "inf"])
def test_coord_check_lr_is_checked(run_cli, tiny_spec, workdir, lr):
    only_error(run_cli("coord-check", tiny_spec, "--lr", lr), "--lr:")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("gib", ["nan", "-5", "0"])
def test_gpu_memory_is_checked(run_cli, searched, gib):
    only_error(
        run_cli("transfer", searched, "--to", "width=48", "--dry-run", "--gpu-memory", gib), "--gpu-memory:"
    )


@pytest.mark.parametrize(
    "env, key",
    [({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"RANK": "abc"}, "RANK"), ({"RANK": "1"}, "RANK")],
    ids=["world-size-text", "rank-text", "stray-rank"],
)
def test_launch_variables_are_checked(run_cli, searched, monkeypatch, env, key):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = run_cli("transfer", searched, "--to", "width=48", "--to", "train.steps=4")
    only_error(r, f"{key}:")
    assert not list(searched.glob("target-*"))  # a stray RANK=1 wrote a target without its plan.yaml


def test_columns_zero_does_not_make_the_output_vanish(searched):
    env = {**os.environ, "CI": "true", "COLUMNS": "0"}
    p = subprocess.run(
        [sys.executable, "-m", "mutune", "transfer", str(searched), "--to", "width=48", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "target plan" in p.stdout and "parameters" in p.stdout and "48 (proxy 32" in p.stdout


def test_to_given_twice_is_refused_even_with_one_value(run_cli, searched):
    only_error(
        run_cli("transfer", searched, "--to", "width=48", "--to", "model.width=48", "--dry-run"),
        "--to model.width:",
    )


def test_to_accepts_several_keys_after_one_flag(run_cli, searched):
    r = run_cli("transfer", searched, "--to", "width=48,train.steps=4", "--dry-run")
    assert r.code == 0, r
    assert "target-width48-steps4" in r.out
    only_error(run_cli("transfer", searched, "--to", "width=48,width=64", "--dry-run"), "--to model.width:")


def test_a_target_narrower_than_the_proxy_warns(run_cli, searched):
    r = run_cli("transfer", searched, "--to", "width=16", "--dry-run")
    assert r.code == 0, r
    assert [ln for ln in r.err.splitlines() if "narrower than the proxy (32)" in ln]


def test_base_depth_above_depth_warns(run_cli, tiny_spec):
    r = run_cli("search", tiny_spec, "model.base_depth=2", "search.n_trials=1", "--no-transfer")
    assert r.code == 0, r
    warn = [ln for ln in r.err.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "model.base_depth (2)" in warn[0] and "model.depth (1)" in warn[0]


def test_a_factory_that_exits_the_process_is_their_error(workdir):
    """``os._exit`` cannot be caught: while the user's code runs it raises instead (in a subprocess
    here, where a regression would end the command silently rather than the test run)."""
    (workdir / "exiting_factory.py").write_text(
        "import os\n\ndef build(width, vocab_size, alpha_attn=1.0):\n    os._exit(5)\n"
    )
    model = {k: v for k, v in TINY["model"].items() if k != "head_dim"}
    write_spec(
        workdir / "f.yaml",
        {**TINY, "model": {**model, "family": "factory", "factory": "exiting_factory:build"}},
    )
    code, out, err = finish(mutune("search", "f.yaml", "--no-transfer", cwd=workdir))
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: model.factory:") and "os._exit(5)" in lines[0]


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.optimizer", "sgd"),
        ("model.tie_embeddings", "true"),
        ("model.head_dim", "8"),
        ("hparams.lr", "0.1"),
    ],
)
def test_keys_the_tuned_hparams_depend_on_are_refused(run_cli, searched, key, value):
    for cmd in ("transfer", "inspect"):
        where = searched if cmd == "transfer" else "tiny.yaml"
        r = run_cli(
            cmd,
            where,
            "--to",
            "width=48",
            "--to",
            f"{key}={value}",
            *(["--dry-run"] if cmd == "transfer" else []),
        )
        only_error(r, f"--to {key}:")


def test_keys_that_transfer_roughly_are_warned_everywhere(run_cli, searched):
    for cmd in (["transfer", searched, "--dry-run"], ["inspect", "tiny.yaml"]):
        r = run_cli(*cmd, "--to", "width=48", "--to", "model.bias=true")
        assert r.code == 0, r
        assert [
            ln for ln in r.err.splitlines() if ln.startswith("warning: model.bias=True does not µTransfer")
        ]


def test_a_best_yaml_tuned_with_another_optimizer_is_refused(run_cli, searched):
    """best.yaml copied beside a spec that differs in a key its hyperparameters depend on."""
    doc = yaml.safe_load((searched / "config.yaml").read_text())
    doc["train"]["optimizer"] = "sgd"
    (searched / "config.yaml").write_text(yaml.safe_dump(doc))
    r = run_cli("transfer", searched, "--to", "width=48", "--dry-run")
    line = only_error(r, str(searched / "best.yaml"))
    assert "train.optimizer: best.yaml has 'adamw', the spec has 'sgd'" in line and "--force" in line


# ---------------------------------------------------------------------------------------------
# 8. --smoke never hides a broken spec


def test_smoke_does_not_hide_a_missing_data_path(run_cli, workdir):
    data = {"corpus": "tokens", "path": "data/absent", "vocab_size": 50257}
    write_spec(workdir / "d.yaml", {**TINY, "name": "d", "data": data})
    for smoke in ([], ["--smoke"]):
        only_error(run_cli("search", "d.yaml", *smoke, "--no-transfer"), "data.path:")
    assert not (workdir / "runs").exists()
    r = run_cli("search", "d.yaml", "--smoke", "data.smoke_fallback=true", "--no-transfer")  # said: fall back
    assert r.code == 0, r
    assert [ln for ln in r.err.splitlines() if ln.startswith("warning: --smoke: data.path data/absent")]
    assert (
        yaml.safe_load((workdir / "runs" / "d-smoke" / "config.yaml").read_text())["data"]["corpus"]
        == "stdlib"
    )


# ---------------------------------------------------------------------------------------------
# 4. No code runs from a run-dir file

PWNED = "mutune-pwned"


class _Payload:
    """What a crafted pickle would run when loaded: ``touch <PWNED>`` in the current folder."""

    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def test_a_crafted_checkpoint_is_refused_before_any_of_it_runs(run_cli, searched, workdir):
    target = _partial_target(searched)
    ckpt = target / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)  # (mutune's own checkpoint loads with weights_only)
    state["curve"] = _Payload()
    torch.save(state, ckpt)
    before = sha(ckpt)
    r = run_cli("transfer", searched, "--to", "width=48", "--to", "train.steps=20", "--resume")
    line = only_error(r, f"{ckpt}:")
    assert "not loaded" in line
    assert not (workdir / PWNED).exists()  # nothing of it ran
    assert sha(ckpt) == before


@pytest.mark.parametrize("part", ["state.pt", ".metadata"])
def test_a_crafted_sharded_checkpoint_is_refused_before_any_of_it_runs(run_cli, searched, workdir, part):
    """A sharded (FSDP2) run's checkpoint folder: its state.pt, and DCP's own .metadata pickle, which
    DCP unpickles with nothing restricted; mutune reads it from an allow-list."""
    to = ["--to", "width=48", "--to", "train.steps=20", "--to", "train.parallel=fsdp"]
    assert run_cli("transfer", searched, *to).code == 0
    target = searched / "target-width48-steps20"
    (target / "result.yaml").unlink()
    (step,) = (target / "checkpoints").iterdir()
    if part == "state.pt":
        state = torch.load(step / "state.pt", weights_only=True)
        state["curve"] = _Payload()
        torch.save(state, step / "state.pt")
    else:
        import pickle

        (step / ".metadata").write_bytes(pickle.dumps(_Payload()))
    r = run_cli("transfer", searched, *to, "--resume")
    assert r.code == 2, r
    assert str(step / part) in error_line(r) and "not loaded" in error_line(r)
    assert not (workdir / PWNED).exists()


# ---------------------------------------------------------------------------------------------
# 9. Plans a real target can use: gradient accumulation, a layout that fits, every multiplier


def test_gradient_accumulation_equals_the_full_batch(run_cli, searched):
    """The same target in micro-batches of 2 (and of 1) of its batch of 4: the same losses within
    float tolerance, step by step (the gradient is the same mean, summed in another order)."""
    twin = searched.parent / "twin"
    shutil.copytree(searched, twin)
    to = ["--to", "width=48", "--to", "train.steps=20", "--to", "train.eval_every=5"]
    assert run_cli("transfer", searched, *to).code == 0
    full = searched / "target-width48-steps20"
    for micro in (2, 1):
        shutil.rmtree(twin / full.name, ignore_errors=True)
        r = run_cli("transfer", twin, *to, "--to", f"train.micro_batch_size={micro}")
        assert r.code == 0, r
        assert (twin / full.name).is_dir()  # the same target: a micro-batch names no folder
        a, b = pd.read_csv(full / "metrics.csv"), pd.read_csv(twin / full.name / "metrics.csv")
        for col in ("train_loss", "val_loss"):
            x, y = a.dropna(subset=[col]), b.dropna(subset=[col])
            assert x.step.tolist() == y.step.tolist() and len(x) >= 3
            assert y[col].tolist() == pytest.approx(x[col].tolist(), rel=1e-5)
        plan = yaml.safe_load((twin / full.name / "plan.yaml").read_text())
        assert plan["cost"]["memory"]["micro_batch_size"] == micro


def test_micro_batch_size_must_divide_each_process_batch(run_cli, searched):
    args = ["transfer", searched, "--to", "width=48", "--to", "train.micro_batch_size=3", "--dry-run"]
    only_error(run_cli(*args), "--to train.micro_batch_size:")
    r = run_cli("transfer", searched, "--to", "width=48", "--to", "train.micro_batch_size=4", "--nproc", "2")
    only_error(r, "train.micro_batch_size:")  # 4 / 2 processes = 2 each, not a whole micro-batch of 4


def test_the_6_7b_plan_states_a_layout_that_fits_and_the_gpus_it_needs(run_cli, workdir):
    gpt3 = ROOT / "configs" / "gpt3-6.7b.yaml"
    r = run_cli("transfer", gpt3, "--dry-run", "--save-plan", workdir / "plan.yaml")
    assert r.code == 0, r
    plan = yaml.safe_load((workdir / "plan.yaml").read_text())
    need = plan["gpus_needed"]
    # FSDP2 over 2 x 80 GiB, each GPU half the states, micro-batches with activation checkpointing
    assert need["gpus"] == 2 and need["strategy"] == "fsdp" and need["activation_checkpointing"]
    assert need["per_gpu"]["total"] <= 0.9 * 80 * 2**30
    assert need["micro_batch_size"] * need["accumulation"] * 2 == 1024  # the spec's batch, unchanged
    assert "train.micro_batch_size=" in " ".join(need["keys"])
    flat = " ".join(r.out.split())
    assert "GPUs needed" in flat and "2 x 80 GiB: fsdp (FSDP2), micro-batch" in flat
    # one GPU cannot hold its 107 GB of weights, gradients and Adam state, whatever the layout
    assert plan["cost"]["memory"]["weights"] * 4 > 80 * 2**30
    # on the 8 GPUs a user names: a layout for them
    r = run_cli("transfer", gpt3, "--dry-run", "--gpus", "8", "--save-plan", workdir / "plan8.yaml")
    assert r.code == 0, r
    lay = yaml.safe_load((workdir / "plan8.yaml").read_text())["layout"]
    assert lay["gpus"] == 8 and lay["per_gpu"]["total"] <= 0.9 * 80 * 2**30
    assert "layout on 8 x 80 GiB" in " ".join(r.out.split())
    r = run_cli("transfer", gpt3, "--dry-run", "--gpus", "3")  # 1024 sequences do not split in 3
    assert r.code == 0 and "none fits" in " ".join(r.out.split())


def test_the_printed_plan_shows_every_multiplier(run_cli, searched):
    r = run_cli("transfer", searched, "--to", "width=128", "--to", "depth=4", "--dry-run")
    assert r.code == 0, r
    rows = {
        ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in r.out.splitlines() if ln.count("│") >= 3
    }
    assert rows["width multiplier m"].startswith("4 (width 128 / base 32)")
    assert rows["depth multiplier m_L"].startswith("4 (depth 4 / base 1, α 1)")
    assert rows["residual multiplier"].startswith("0.25")  # m_L^-α
    best = yaml.safe_load((searched / "best.yaml").read_text())["hparams"]
    assert float(rows["output multiplier"]) == pytest.approx(best["alpha_out"] / 4, rel=1e-3)  # α_out / m
    assert float(rows["input multiplier"]) == pytest.approx(best["alpha_in"], rel=1e-3)
    assert "attention multiplier" in rows


# ---------------------------------------------------------------------------------------------
# 10. Smaller frictions


def test_a_depth_sweep_records_depth_alpha(run_cli, tiny_spec, workdir, monkeypatch):
    from mutune import sweep as sweep_mod

    titles = []
    monkeypatch.setattr(sweep_mod, "plot", lambda analysis, path, title: titles.append(title))
    args = ["sweep", tiny_spec, "--depths", "1,2", "--values", "0.01,0.02", "model.depth_alpha=0.5"]
    r = run_cli(*args)
    assert r.code == 0, r
    checks = workdir / "runs" / "tiny" / "checks"
    assert yaml.safe_load((checks / "sweep-lr.yaml").read_text())["grid"]["depth_alpha"] == 0.5
    assert set(pd.read_csv(checks / "sweep-lr-runs.csv").depth_alpha) == {0.5}
    assert set(pd.read_csv(checks / "sweep-lr-depth-summary.csv").depth_alpha) == {0.5}
    assert titles and all("depth_alpha 0.5" in t for t in titles)


def test_a_sweep_claims_its_run_dir(run_cli, searched, workdir):
    write_spec(workdir / "other.yaml", {**TINY, "name": "other"})
    before = snapshot(searched)
    r = run_cli("sweep", "other.yaml", "--run-dir", searched, "--widths", "32", "--values", "0.01")
    assert only_error(r, "name:") and str(searched) in r.err
    assert snapshot(searched) == before and not (searched / "checks" / "sweep-lr-runs.csv").exists()
    r = run_cli("sweep", "other.yaml", "--widths", "32", "--values", "0.01")  # a new run dir: claimed
    assert r.code == 0, r
    assert yaml.safe_load((workdir / "runs" / "other" / "config.yaml").read_text())["name"] == "other"


# ---------------------------------------------------------------------------------------------
# 1. Every writer of a run dir is serialised (real processes, real SIGKILLs)


def _law_runs(run: Path) -> dict[str, float]:
    path = run / "laws" / "runs.csv"
    return {row.key: row.loss for row in pd.read_csv(path).itertuples()} if path.is_file() else {}


def _laws(run: Path) -> dict:
    best = _best(run)
    return {
        axis: (law["exponent"], [p["multiple"] for p in law["points"]])
        for axis, law in (best.get("laws") or {}).items()
    }


def _axes_trained(run: Path) -> list[str]:
    """The axis ('s'teps or 'b'atch_size) of every run in laws/runs.csv (read while it is written)."""
    try:
        return [str(a)[0] for a in pd.read_csv(run / "laws" / "runs.csv").axis]
    except (FileNotFoundError, pd.errors.EmptyDataError, AttributeError):
        return []


def _pause(p: subprocess.Popen, run: Path) -> None:
    """SIGSTOP ``p`` at a moment it does not hold ``run``'s writers' lock, so that the other writers
    go on meanwhile: the interleaving a slow writer has, made certain rather than left to timing."""
    import fcntl

    while True:
        p.send_signal(signal.SIGSTOP)
        with open(run / ".rundir.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # stopped while it held the lock: let it finish that write
                p.send_signal(signal.SIGCONT)
                time.sleep(0.01)
                continue
            fcntl.flock(f, fcntl.LOCK_UN)
            return


@pytest.mark.slow
def test_concurrent_laws_keep_both_laws_and_every_run(pristine, workdir):
    """``mutune laws --steps`` and ``mutune laws --batch-size`` on one run dir at once: the steps fit
    has read best.yaml and trained a point when the batch-size fit starts, trains and is SIGKILLed;
    the steps fit then finishes, and the batch-size command is run again. Both laws and every run
    are kept, as when they run one after the other (before, each wrote the runs table and the laws
    from its own copy: one law, and the other's runs, were lost)."""
    for name in ("both", "twin"):
        shutil.copytree(pristine / "runs" / "tiny", workdir / name)
    steps, batch = ["--steps", "0.5,1"], ["--batch-size", "0.5,1"]
    for axis in (steps, batch):  # the uninterrupted twin: one after the other
        code, out, err = finish(mutune("laws", "twin", *axis, cwd=workdir))
        assert code == 0, err
    both = workdir / "both"
    a = mutune("laws", "both", *steps, cwd=workdir)
    try:
        wait_for(lambda: "s" in _axes_trained(both), timeout=300)
        _pause(a, both)
        b = mutune("laws", "both", *batch, cwd=workdir)
        wait_for(lambda: _axes_trained(both).count("b") >= 2, timeout=300)
        b.send_signal(signal.SIGKILL)
        b.wait()
    finally:
        a.send_signal(signal.SIGCONT)
    code, out, err = finish(a)
    assert code == 0, err
    code, out, err = finish(mutune("laws", "both", *batch, cwd=workdir))  # the killed command, again
    assert code == 0, err
    assert _law_runs(both) == _law_runs(workdir / "twin")  # every run, with the same losses
    assert _laws(both) == _laws(workdir / "twin") and set(_laws(both)) == {"steps", "batch_size"}
    mine, theirs = _best(both)["provenance"], _best(workdir / "twin")["provenance"]
    for key in ("trial_number", "loss", "n_trials_finished", "trials_flops", "laws_flops", "search_flops"):
        assert mine[key] == pytest.approx(theirs[key]), key
    loadable(both)


@pytest.mark.slow
def test_laws_beside_a_resumed_search_keep_the_studys_trials(pristine, workdir):
    """``mutune laws`` has read best.yaml (3 trials) and trains when a resumed search (to 6 trials)
    runs beside it to its end: best.yaml ends with the study's 6 trials and the laws (before, laws
    rewrote it from the copy it read at its start: 3 trials, the search's FLOPs understated), as
    when the two run one after the other."""
    for name in ("both", "twin"):
        shutil.copytree(pristine / "runs" / "tiny", workdir / name)
    shutil.copy(pristine / "tiny.yaml", workdir / "tiny.yaml")
    search = ["search", "tiny.yaml", "search.n_trials=6", "--no-transfer", "--run-dir"]
    laws = ["--steps", "0.5,1,2"]
    for cmd in ([*search, "twin"], ["laws", "twin", *laws]):
        code, out, err = finish(mutune(*cmd, cwd=workdir))
        assert code == 0, err
    both = workdir / "both"
    fit = mutune("laws", "both", *laws, cwd=workdir)
    try:
        wait_for(lambda: _axes_trained(both), timeout=300)  # it has read best.yaml, and trains
        _pause(fit, both)
        code, out, err = finish(mutune(*search, "both", cwd=workdir))
        assert code == 0, err
    finally:
        fit.send_signal(signal.SIGCONT)
    code, out, err = finish(fit)
    assert code == 0, err
    mine, theirs = _best(both), _best(workdir / "twin")
    assert finished(both) == 6 == mine["provenance"]["n_trials_finished"]
    trials_flops = sum(t.user_attrs.get("flops", 0.0) for t in load(both).get_trials())
    assert mine["provenance"]["trials_flops"] == pytest.approx(trials_flops)
    for key in ("trial_number", "loss", "n_trials_finished", "trials_flops", "laws_flops", "search_flops"):
        assert mine["provenance"][key] == pytest.approx(theirs["provenance"][key]), key
    assert mine["hparams"] == theirs["hparams"] and _laws(both) == _laws(workdir / "twin")
    loadable(both)


@pytest.mark.slow
def test_two_concurrent_sweeps_of_one_grid_both_finish(workdir):
    """Two sweeps of one grid at once: both finish (before, the one that ran out of points first
    stopped with "did not finish" while the other still trained one), each point trained once."""
    write_spec(workdir / "tiny.yaml", {**TINY, "train": {**TINY["train"], "steps": 60, "eval_every": 30}})
    args = ["sweep", "tiny.yaml", "--widths", "32,48", "--values", "0.005,0.01,0.02"]
    procs = [mutune(*args, cwd=workdir) for _ in range(2)]
    for p in procs:
        code, out, err = finish(p)
        assert code == 0, err
        assert "Traceback" not in err
    runs = pd.read_csv(workdir / "runs" / "tiny" / "checks" / "sweep-lr-runs.csv")
    assert len(runs) == 6 and (runs.state == "COMPLETE").all()
    trials = load(workdir / "runs" / "tiny", "tiny-sweep-lr").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6  # no point trained twice


# ---------------------------------------------------------------------------------------------
# 2. A search resumes exactly (real SIGKILLs at random points)

RESUME = {
    **TINY,
    "name": "er",
    "train": {**TINY["train"], "steps": 150, "eval_every": 75},
    "search": {"n_trials": 5},
}


def _running_here(run: Path, pid: int) -> bool:
    """A trial of process ``pid`` is running (so a kill now lands mid-trial)."""
    if not (run / "study.journal").exists():
        return False
    try:
        trials = load(run, "er").get_trials(deepcopy=False)
    except KeyError:  # no study yet
        return False
    host = socket.gethostname()
    return any(
        t.state == TrialState.RUNNING and t.user_attrs.get("worker") == f"{host}:{pid}" for t in trials
    )


def _configurations(run: Path) -> list[tuple]:
    complete = [t for t in load(run, "er").get_trials() if t.state == TrialState.COMPLETE]
    return sorted((tuple(sorted(t.params.items())), t.value) for t in complete)


@pytest.mark.slow
def test_a_search_killed_three_times_tries_what_an_uninterrupted_one_does(workdir):
    """SIGKILL a search three times at random points of its trials, then run it to the end: its
    trials' configurations and losses, and best.yaml, are an uninterrupted search's (before, each
    retried trial used up a trial number and the sampler drew point k from trial k: points were
    skipped, the uninterrupted run's winner among them)."""
    import random

    write_spec(workdir / "er.yaml", RESUME)
    code, out, err = finish(mutune("search", "er.yaml", "--no-transfer", "--run-dir", "whole", cwd=workdir))
    assert code == 0, err
    rng, killed = random.Random(22), workdir / "killed"
    for _ in range(3):
        p = mutune("search", "er.yaml", "--no-transfer", "--run-dir", "killed", cwd=workdir)
        wait_for(lambda p=p: _running_here(killed, p.pid), timeout=300)
        time.sleep(rng.uniform(0.0, 0.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
    code, out, err = finish(mutune("search", "er.yaml", "--no-transfer", "--run-dir", "killed", cwd=workdir))
    assert code == 0, err
    trials = load(killed, "er").get_trials()
    orphans = [t for t in trials if "orphaned" in t.user_attrs.get("fail_reason", "")]
    assert len(orphans) >= 1  # killed mid-trial (each kill that was re-ran a trial)
    assert _configurations(killed) == _configurations(workdir / "whole")
    mine, theirs = _best(killed), _best(workdir / "whole")
    assert mine["hparams"] == theirs["hparams"]
    for key in ("loss", "n_trials_finished", "search_flops"):
        assert mine["provenance"][key] == pytest.approx(theirs["provenance"][key]), key
    loadable_run = killed
    assert cli.main(["-q", "report", str(loadable_run), "--format", "json", "--no-plots"]) == 0


# ---------------------------------------------------------------------------------------------
# 3. A killed run never blocks the next (real SIGKILLs), and SIGTERM stops every rank

HOLD = {
    "mutune": "from mutune.study.journal import JournalLock as L",
    "optuna": "from optuna.storages.journal import JournalFileSymlinkLock as L",
}


@pytest.mark.slow
@pytest.mark.parametrize("holder", ["mutune", "optuna"])
def test_a_stale_journal_lock_is_taken_over(searched, workdir, holder):
    """A writer SIGKILLed while it held the journal's lock (mutune's, or Optuna's own, on a relative
    path where Optuna's grace period never applies): the next search and sweep take it over, say so,
    and finish (before, every later command in the run dir spun at full CPU, forever)."""
    journal = "runs/tiny/study.journal"
    code = f"{HOLD[holder]}; import sys, time; L(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
    p = subprocess.Popen(
        [sys.executable, "-c", code, journal], cwd=workdir, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "held"
    p.send_signal(signal.SIGKILL)
    p.wait()
    lock = searched / "study.journal.lock"
    assert lock.is_symlink()
    if holder == "optuna":  # Optuna's lock names no holder: taken over once older than any append
        os.utime(lock, (time.time() - 60, time.time() - 60), follow_symlinks=False)
    trials = complete_trials(searched)
    code, out, err = finish(
        mutune("search", "tiny.yaml", "search.n_trials=4", "--no-transfer", cwd=workdir), 300
    )
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:") and "study.journal.lock" in ln]
    assert len(warning) == 1 and "taken over" in warning[0] and "gone" in warning[0]
    assert finished(searched) == 4 and {n: complete_trials(searched)[n] for n in trials} == trials
    code, out, err = finish(
        mutune("sweep", "tiny.yaml", "--widths", "32", "--values", "0.01", cwd=workdir), 300
    )
    assert code == 0, err
    assert not lock.exists()


def _processes_naming(text: str) -> list[int]:
    """Processes (other than this one) whose command line contains ``text``."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                out.append(int(d.name))
        except OSError:
            continue
    return [pid for pid in out if pid != os.getpid()]


@pytest.mark.slow
def test_sigterm_to_transfer_nproc_2_stops_every_rank_and_its_hint_resumes(slow_proxy, workdir):
    twin = workdir / "runs" / "twin"
    shutil.copytree(slow_proxy, twin)
    to = ["--to", "width=48", "--to", "train.steps=200", "--to", "train.eval_every=50"]
    p = mutune("transfer", slow_proxy, *to, "--nproc", "2", cwd=workdir)
    target = slow_proxy / "target-width48-steps200"
    wait_for(lambda: _steps_logged(target) >= 20, timeout=300)
    p.send_signal(signal.SIGTERM)  # to the command the user started, not to its ranks
    code, out, err = finish(p, timeout=400)
    assert code == 130, err
    assert "Traceback" not in err
    assert not _processes_naming(str(slow_proxy))  # no rank left behind, writing the target
    lines = err.splitlines()
    at = next(i for i, ln in enumerate(lines) if "Resume with:" in ln)
    step = torch.load(target / "checkpoint.pt", weights_only=True)["step"]
    assert f"stopped at step {step} of 200" in lines[at] and str(target) in lines[at] and 20 <= step < 200
    command = shlex.split(lines[at + 1])
    assert command[:2] == ["mutune", "transfer"] and "--resume" in command
    assert command[command.index("--nproc") + 1] == "2"  # the launch it stopped, pasted as it was
    code, out, err = finish(mutune(*command[1:], cwd=workdir), timeout=400)
    assert code == 0, err
    code, out, err = finish(mutune("transfer", twin, *to, "--nproc", "2", cwd=workdir), timeout=400)
    assert code == 0, err
    mine = yaml.safe_load((target / "result.yaml").read_text())["curve"]
    theirs = yaml.safe_load((twin / target.name / "result.yaml").read_text())["curve"]
    assert [c["step"] for c in mine] == [c["step"] for c in theirs] == [50, 100, 150, 200]
    assert [c["val_loss"] for c in mine] == pytest.approx([c["val_loss"] for c in theirs], rel=1e-6)


@pytest.mark.slow
def test_init_on_a_full_disk_leaves_no_truncated_spec(run_cli, tmpfs):
    filler = fill(tmpfs, leave=0)
    r = run_cli("init", tmpfs / "mine.yaml")
    assert r.code == 2, r
    line = error_line(r)
    assert "mine.yaml" in line and "no space left" in line
    assert not (tmpfs / "mine.yaml").exists() and not no_temp_files(tmpfs)  # not a truncated spec
    filler.unlink()
    assert run_cli("init", tmpfs / "mine.yaml").code == 0
    assert config_loads(tmpfs / "mine.yaml")


def config_loads(path: Path) -> bool:
    from mutune import config

    return config.load_spec(path).name == path.stem
