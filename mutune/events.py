"""Progress events the core emits and front ends render (the CLI's bars, a notebook's prints).

The core never prints: search, transfer and the checks call these hooks. Subclass and override
what you want to show; every hook defaults to doing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialEvent:
    """A trial has ended."""

    number: int
    state: str  # Optuna's state name: COMPLETE, FAIL, PRUNED
    value: float | None
    params: dict[str, Any]
    seconds: float
    reason: str
    finished: int  # finished trials in the study (complete + pruned + diverged)
    n_trials: int
    best_value: float | None
    best_number: int | None
    running: int = 0  # trials running in the study now (this process's and others')
    worker: str = ""  # host:pid of the process that ran it
    ran_here: bool = True  # by this process or its worker processes (not another machine's or command's)
    # where a ladder trial ran (ladder_width, ladder_seed, ladder_steps); {} for a proxy trial. The
    # best so far is among trials run at the same place
    fidelity: dict[str, Any] = field(default_factory=dict)


class Events:
    def search_started(self, spec: Any, run_dir: Path, finished: int) -> None:
        """The study is open; ``finished`` trials were already done (a resume)."""

    def search_complete(self, run_dir: Path, finished: int) -> None:
        """The study already holds every trial this search asks for: nothing runs, no record changes."""

    def search_planned(self, plan: Any) -> None:
        """Before the first trial: the search's ``budget.Plan`` (proxy trials, ladder, FLOPs, budget)."""

    def trial_ended(self, event: TrialEvent) -> None:
        """After every trial, once trials.csv and best.yaml are rewritten."""

    def step(self, trial: int | None, log: Any) -> None:
        """Training progress (a ``train.StepLog``) of trial ``trial``, or of the target when None."""

    def law_point(self, text: str) -> None:
        """A line-search run for the LR laws finished (:mod:`mutune.laws_run`), described in ``text``."""

    def planned(self, plan: Any) -> None:
        """A target run is planned (a ``transfer.Plan``), before it trains."""

    def coord_checked(self, record: dict[str, Any]) -> None:
        """The search's coord-check gate is done: ``record["verdict"]`` is passed, skipped or
        not_applicable (a failure raises instead), with widths, lr and seconds when it ran."""

    def sweep_started(self, grid: Any, run_dir: Path, finished: int) -> None:
        """A width sweep (a ``sweep.Grid``) starts; ``finished`` of its points were already done."""


SILENT = Events()
