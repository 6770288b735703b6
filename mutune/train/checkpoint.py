"""What a run leaves on disk so it can be continued exactly: checkpoint, metrics.csv, result.yaml.

The checkpoint holds weights, optimizer and schedule state and the data-order state, so a resumed
run on the CPU reproduces an uninterrupted one bit for bit; it is written atomically (a kill leaves
the previous one). Its *signature* (the spec and hyperparameters that decide the numbers) must match
the resuming run's.
"""

from __future__ import annotations

import contextlib
import csv
import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import HParams, Spec, SpecError
from ..config.meaning import RESUME_EFFECTS, keys_where, select
from ..errors import arg
from ..files import atomic_write, describe, os_error

try:
    import fcntl
except ImportError:  # Windows: no flock; a second writer is not detected there
    fcntl = None


def resume_signature(spec: Spec, hp: HParams) -> dict:
    """What a checkpoint must share with the run resuming it (:data:`mutune.config.meaning.RESUME_EFFECTS`:
    what decides its numbers, what it records, how its state is laid out), with the hyperparameters
    it trains with; how to run (device, compile, checkpoint cadence) may differ."""
    d = select(spec.to_dict(), keys_where(Spec, RESUME_EFFECTS))
    return {k: d[k] for k in ("model", "data", "train", "seed")} | {"hparams": asdict(hp)}


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint's state; a truncated file or one that is not a mutune checkpoint is a user error
    naming it (never an unpickling traceback)."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        cause = os_error(e)
        if cause is not None:
            raise SpecError(str(path), describe(cause)) from e
        raise SpecError(
            str(path),
            f"is not a readable checkpoint ({type(e).__name__}: {_first_sentence(e)}); "
            "it is truncated or was not written by mutune. Move it away to start this target over",
        ) from None
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "signature"} <= set(state):
        raise SpecError(str(path), "is not a mutune checkpoint; move it away to start this target over")
    return state


def _first_sentence(e: BaseException) -> str:
    text = (str(e).splitlines() or [""])[0]
    return text.split(". ")[0][:160]


def save(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    rng: np.random.Generator,
    step: int,
    curve: list[dict],
    seconds: float,
    spec: Spec,
    hp: HParams,
) -> None:
    """Everything needed to continue exactly: weights, optimizer and schedule state, data order."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "data_rng": rng.bit_generator.state,
        "curve": list(curve),
        "seconds": seconds,
        "signature": resume_signature(spec, hp),
        "spec": spec.to_dict(),
        "hparams": asdict(hp),
    }
    atomic_write(path, lambda p: _save(state, p))


def _save(state: dict, path: Path) -> None:
    # through a Python file, so that a full disk surfaces as the OSError (ENOSPC) it is; torch.save
    # on a path reports it as "[enforce fail at inline_container.cc] unexpected pos"
    with open(path, "wb") as f:
        torch.save(state, f)


def restore(
    state: dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any, rng: np.random.Generator
) -> tuple[int, list[dict], float]:
    """Load a checkpoint's state into the run's objects; (step, curve, seconds so far)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["data_rng"]
    return state["step"], state["curve"], state["seconds"]


class Metrics:
    """metrics.csv, appended row by row so a killed run keeps what it logged. On resume, rows
    after the checkpoint's step are dropped (they are about to be recomputed)."""

    COLUMNS = ("step", "train_loss", "val_loss", "lr", "tokens", "branch", "seconds")

    def __init__(self, path: Path | None, keep_until: int = 0):
        self.path = path
        if path is None:
            return
        kept = []
        if keep_until and path.exists():
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if _step(r) is not None and _step(r) <= keep_until]

        def write(p: Path) -> None:
            with p.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.COLUMNS)
                w.writerows([[r.get(c, "") for c in self.COLUMNS] for r in kept])

        atomic_write(path, write)  # a full disk here leaves the old metrics.csv, not an empty one

    def row(self, **values: float | int | str) -> None:
        if self.path is not None:
            try:
                with self.path.open("a", newline="") as f:
                    csv.writer(f).writerow([values.get(c, "") for c in self.COLUMNS])
            except OSError as e:
                if os_error(e) is None:
                    raise
                raise SpecError(str(self.path), describe(e)) from e


def _step(row: dict) -> int | None:
    """A row's step, or None for a row cut off by a kill or a full disk (it is dropped on resume). A
    branch's row (its horizon's loss) is kept while the checkpoint is past the branch's start."""
    complete = row.get(Metrics.COLUMNS[-1]) not in (None, "") or row.get("branch") not in (None, "")
    try:
        return int(row.get("step") or "") if complete else None
    except ValueError:
        return None


def write_result(path: Path, summary: dict, curve: list[dict], hp: HParams) -> None:
    doc = {"hparams": asdict(hp), **summary, "curve": curve}
    atomic_write(
        path,
        lambda p: p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"),
    )


def read_result(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc.pop("hparams", None)
    doc.pop("transfer", None)  # a target's: the hparams before and after the LR laws (mutune.transfer)
    return doc


class FolderLock:
    """One writer per run folder: an exclusive ``flock`` on ``<folder>/.lock`` while it trains.

    A second process (two searches launching the same target, a transfer started twice) is refused
    at once with the holder's pid, instead of interleaving metrics.csv and racing checkpoints. The
    kernel drops the lock when its holder dies, so a killed run never leaves the folder locked; a run
    that ends removes the file.
    Re-entrant within a process (``transfer`` holds it while writing the plan, ``train`` while
    training).
    """

    _held: dict[str, list] = {}  # resolved lock path -> [open file, depth]

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = str(self.path.resolve())
        if self.key in self._held:
            self._held[self.key][1] += 1
            return self
        while True:
            f = open(self.path, "a+")  # noqa: SIM115 (held until __exit__)
            if fcntl is None:
                break
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise SpecError(
                    str(self.folder),
                    f"is being trained by {holder}; wait for it to finish (or stop it), then run again "
                    f"(with {arg('resume', True)} to continue from its checkpoint)",
                ) from None
            if _same_file(f, self.path):
                break
            f.close()  # its holder removed it as we opened it (the run ended): take the new one
        with contextlib.suppress(OSError):  # who holds it is for the message; a full disk may refuse it
            os.ftruncate(f.fileno(), 0)
            os.pwrite(f.fileno(), f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._held[self.key] = [f, 1]
        return self

    def __exit__(self, *exc: object) -> None:
        entry = self._held[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.key]
            # a finished (or stopped) run leaves no .lock behind; removed while still held, so a
            # process that opened it meanwhile finds it gone and takes a fresh one (_same_file)
            with contextlib.suppress(OSError):
                self.path.unlink()
            if fcntl is not None:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
            entry[0].close()


def _same_file(f: Any, path: Path) -> bool:
    """Whether the open file ``f`` is still the one at ``path`` (not removed or replaced since)."""
    try:
        return os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except OSError:
        return False
