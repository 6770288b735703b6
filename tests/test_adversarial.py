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
