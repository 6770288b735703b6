"""Shared fixtures: run the CLI in-process, in a temporary working directory, on tiny specs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from mutune import cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Tiny models run fastest on one thread, and a shared CI machine punishes oversubscription (two
# threads were 10-30x slower than one under load here). Subprocesses the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err[-2000:]!r})"


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Call ``mutune ARGS`` in-process; returns exit code, stdout and stderr."""
    monkeypatch.setenv("CI", "true")  # plain logs, no live bars

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh current directory, so ./runs lands in a temporary place."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


TINY = {
    "name": "tiny",
    "model": {"family": "gpt", "width": 32, "base_width": 32, "depth": 1, "head_dim": 16, "seq_len": 32},
    "train": {"steps": 8, "batch_size": 4, "warmup_steps": 2, "eval_every": 4, "eval_batches": 2},
    "search": {"n_trials": 3},
}


@pytest.fixture
def tiny_spec(workdir) -> Path:
    """A tiny GPT spec file (seconds per search)."""
    return write_spec(workdir / "tiny.yaml", TINY)
