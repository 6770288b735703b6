"""Progress for people: the core's events (the search's plan, trials, steps, law points, sweep points)
as live bars on a terminal, or one plain line per event in logs and CI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..config import PARAMETRIZATION_NAMES as NAMES
from ..events import Events, TrialEvent
from ..units import around, human

# console.err is looked up when the bars start: whoever swaps that console (for a terminal) swaps theirs
from . import console
from .console import fmt_secs, live_display, log_line, state
from .target import print_plan


def plan_lines(plan: Any) -> list[str]:
    """The search's split (a ``budget.Plan``), when there is more to say than "N trials"."""
    if plan.budget is None and not plan.rungs:
        return []
    proxy = plan.n_proxy * plan.proxy_flops
    horizon = f", {plan.proxy_steps} steps" if getattr(plan, "proxy_steps", None) else ""
    lines = [f"plan: {plan.n_proxy} proxy trials at width {plan.proxy_width}{horizon} ({human(proxy)}FLOPs)"]
    if plan.rungs and plan.rungs[0].steps is not None:  # successive halving along training length
        rungs = ", then ".join(f"{r.entrants} to {r.steps} steps" for r in plan.rungs)
        lines.append(
            f"  + successive halving: the best continued from their stable state: {rungs} "
            f"({plan.ladder_runs} runs, {human(plan.ladder_flops)}FLOPs)"
        )
    elif plan.rungs:
        rungs = ", then ".join(
            f"{r.entrants} at width {r.width} x {len(r.seeds)} seed{'s' if len(r.seeds) > 1 else ''}"
            for r in plan.rungs
        )
        lines.append(
            f"  + ladder: the top {plan.finalists} re-run: {rungs} ({plan.ladder_runs} runs, "
            f"{human(plan.ladder_flops)}FLOPs)"
        )
    elif plan.finalists:
        lines.append(f"  no ladder: {plan.finalists} finalist leaves nothing to choose between")
    total = f"  = {human(plan.total_flops)}FLOPs"
    if plan.target_flops:
        total += f", {plan.total_flops / plan.target_flops:.1%} of one target run ({human(plan.target_flops)}FLOPs)"
    if plan.budget is not None:
        total += (
            f"; budget {plan.budget:g} = {human(plan.budget_flops)}FLOPs (upper bound: trials are counted at "
            "full length; exact in trial counts with any number of workers on this machine)"
        )
    return [*lines, total]


def _place(fidelity: dict) -> str:
    """A ladder trial's rung as people say it: 'width 64, seed 1' or '400 steps'."""
    from ..ladder import SEED, STEPS, WIDTH  # here: --help and config errors load no optuna

    parts = []
    if WIDTH in fidelity:
        parts.append(f"width {fidelity[WIDTH]}")
    if STEPS in fidelity:
        parts.append(f"{fidelity[STEPS]} steps")
    if SEED in fidelity:
        parts.append(f"seed {fidelity[SEED]}")
    return "rung: " + ", ".join(parts) if parts else ""


class Display(Events):
    """Renders the core's events: trials done, best so far and ETA for a search; step, loss,
    tokens/s and ETA for each run. Live bars on a terminal, one line per event elsewhere."""

    def __init__(self) -> None:
        self.live = live_display()
        self.progress: Progress | None = None
        self.t0 = time.perf_counter()
        self.done_here = 0
        self.ran_here: list[int] = []  # trial numbers this process (or its workers) ran
        self.start_finished = 0  # finished trials in the study when this process started
        self.total = 0  # the plan's trials, proxy and ladder: one denominator for every line
        self.target_dir: Path | None = None  # the planned target's folder, for the resume hint

    def _bars(self) -> Progress:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=console.err,
            )
            self.trials = self.progress.add_task("trials", total=1, info="", visible=False)
            self.steps = self.progress.add_task("run", total=1, info="", visible=False)
            self.progress.start()
        return self.progress

    def search_started(self, spec, run_dir: Path, finished: int) -> None:
        m = spec.model
        self.start_finished = finished
        self.total = spec.search.n_trials or 0
        self.t0 = time.perf_counter()  # the pace of trials, not of the set-up before them (the coord check)
        resumed = f", resuming a study that holds {finished} finished" if finished else ""
        log_line(
            f"searching {m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}) for "
            f"{spec.search.n_trials} trials{resumed} -> {run_dir}"
        )
        if self.live:
            self._bars().update(self.trials, total=spec.search.n_trials, completed=finished, visible=True)

    def search_complete(self, run_dir: Path, finished: int) -> None:
        self.start_finished = finished
        log_line(
            f"nothing to run: the study in {run_dir} already holds {finished} finished trials, as many as "
            "asked or more; its records are left as they are (raise search.n_trials to run more)"
        )

    def search_planned(self, plan) -> None:
        for line in plan_lines(plan):
            log_line(line)

    def step(self, trial: int | None, log) -> None:
        info = f"loss {log.train_loss:.4f}  {human(log.tokens_per_s)} tok/s"
        label = f"trial {trial}" if trial is not None else "target"
        line = f"{label} step {log.step}/{log.steps} {info} eta {fmt_secs(log.eta)}"
        if self.live:
            bars = self._bars()
            bars.update(
                self.steps, description=label, total=log.steps, completed=log.step, info=info, visible=True
            )
            if state.verbose:
                bars.console.print(line, highlight=False)
        elif state.verbose or (
            trial is None and (log.step % max(1, log.steps // 10) == 0 or log.step == log.steps)
        ):
            log_line(line)

    def trial_ended(self, ev: TrialEvent) -> None:
        self.done_here += 1
        if ev.ran_here:
            self.ran_here.append(ev.number)
        best = f"best {ev.best_value:.4f} (#{ev.best_number})" if ev.best_value is not None else "best -"
        value = f"loss {ev.value:.4f}" if ev.value is not None else ev.reason or ""
        where = "" if ev.ran_here else f" (ran by {ev.worker or 'another process'})"
        at = _place(ev.fidelity)
        if at:
            best = best.replace("best", "best there", 1)
            where = f" ({at}){where}"
        if self.live:
            bars = self._bars()
            bars.update(
                self.trials,
                completed=ev.finished,
                total=max(self.total, ev.n_trials, ev.finished),
                info=best,
            )
            bars.console.print(
                f"trial {ev.number:>3} {ev.state:<8} {value}  ({ev.seconds:.1f}s){where}", highlight=False
            )
        else:
            # the study's pace since this process started, whoever ran the trials (shared studies)
            # the plan's total (proxy and ladder), not each phase's own count, so the denominator holds
            total = max(self.total, ev.n_trials, ev.finished)
            gained = max(1, ev.finished - self.start_finished)
            eta = (time.perf_counter() - self.t0) / gained * max(0, total - ev.finished)
            running = f", {ev.running} running" if ev.running else ""
            log_line(
                f"trial {ev.number} {ev.state} {value} ({ev.seconds:.1f}s){where} "
                f"[{ev.finished}/{total} finished in the study{running}; {len(self.ran_here)} ran here] "
                f"{best} eta {fmt_secs(eta)}"
            )

    def summary(self, finished: int) -> str | None:
        """Which trials this process ran, when the study holds others too (a resume, a shared study)."""
        if finished <= len(self.ran_here):
            return None
        if not self.ran_here:
            return f"this process ran no trials; the study already holds {finished} finished"
        ran = ", ".join(f"#{n}" for n in sorted(self.ran_here))
        return (
            f"this process ran {len(self.ran_here)} trial(s) ({ran}); the study holds {finished} finished, "
            f"{finished - len(self.ran_here)} from earlier runs or other processes"
        )

    def law_point(self, text: str) -> None:
        if self.live:
            self._bars().console.print(text, highlight=False)
        else:
            log_line(text)

    def planned(self, plan) -> None:
        self.close()
        self.target_dir = plan.target_dir
        print_plan(plan)

    def coord_checked(self, record: dict) -> None:
        v = record.get("verdict")
        if v == "passed" and "seconds" in record:
            c = record.get("closest") or {}
            nearest = (
                f"; the closest slope, {c['layer']} {c['measure']} at t={c['t']}: {c['slope']:+.2f} against its "
                f"limit {around(c.get('expected', 0.0))}±{c['limit']:g}, {c['share']:.0%} of it"
                if c
                else ""
            )
            log_line(
                f"coord check passed (widths {record['widths'][0]}..{record['widths'][-1]}{nearest}; "
                f"{record['seconds']:.1f}s)"
            )
        elif v == "incomplete":
            modules = ", ".join(f"'{a}'" for a in record.get("unchecked", []))
            console.err.print(
                f"[yellow]warning:[/] coord check incomplete: the attention scores of {modules} were never seen, "
                f"so their scale is unchecked (every slope it could see within its limit, largest |slope| "
                f"{record.get('largest_slope')}); best.yaml records coord_check: incomplete",
                highlight=False,
                soft_wrap=True,
            )
        elif v == "skipped":
            console.err.print(
                "[yellow]warning:[/] coord check skipped (--skip-check); µP is not verified", highlight=False
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class SweepDisplay(Display):  # noqa: D101 (rendered below)
    """The search display, with each sweep point named by its width, value and seed."""

    def sweep_started(self, grid, run_dir: Path, finished: int) -> None:
        resumed = f", {finished} already done" if finished else ""
        log_line(
            f"sweeping {grid.param} over widths {', '.join(map(str, grid.widths))}"
            f"{' and depths ' + ', '.join(map(str, grid.depths)) if len(grid.depths) > 1 else ''} "
            f"({' and '.join(NAMES[p] for p in grid.parametrizations)}): {len(grid)} runs"
            f"{resumed} -> {run_dir / 'checks'}"
        )
        if self.live:
            self._bars().update(self.trials, total=len(grid), completed=finished, visible=True)
        self.grid, self.base = grid, finished
        self.t0 = time.perf_counter()

    def trial_ended(self, ev: TrialEvent) -> None:
        p = ev.params
        self.done_here += 1
        depth = f" depth {p.get('depth')}" if len(self.grid.depths) > 1 else ""
        what = (
            f"{NAMES.get(p.get('parametrization'), '?')} width {p.get('width')}{depth} "
            f"{self.grid.param}={p.get('value', float('nan')):.4g} seed {p.get('seed')}"
        )
        value = f"loss {ev.value:.4f}" if ev.value is not None else ev.reason or ev.state
        done = self.base + self.done_here
        if self.live:
            bars = self._bars()
            bars.update(self.trials, completed=done)
            bars.console.print(f"{what}: {value} ({ev.seconds:.1f}s)", highlight=False)
        else:
            log_line(f"{what}: {value} ({ev.seconds:.1f}s) [{done}/{len(self.grid)}]")
