"""Rendering for the command line: progress bars and logs of the core's events, and the result tables.

Everything here writes to two consoles: ``out`` (results: plans, tables) and ``err`` (progress,
warnings, errors). Lines a user may paste (commands, paths) are printed with ``soft_wrap`` so the
terminal renderer never breaks them.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .cli_ladder import ladder_lines, plan_lines
from .config import PARAMETRIZATION_NAMES as NAMES
from .events import Events, TrialEvent
from .units import human, human_bytes

# soft_wrap: a printed line is never broken by the renderer (on a terminal or piped), so commands,
# paths and resume lines can be pasted; tables still fit their cells to the width.
out = Console(soft_wrap=True)  # results: plans, tables
err = Console(stderr=True, soft_wrap=True)  # progress, warnings, errors


class _State:
    argv: list[str] | None = None  # the command line as given to main(), for resume hints
    verbose = False
    quiet = False
    debug = False


state = _State()


def live_display() -> bool:
    """Live bars only on an interactive terminal; plain one-line-per-event logs otherwise."""
    return err.is_terminal and not state.quiet and os.environ.get("CI", "").lower() not in ("1", "true")


def fmt_secs(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{s}s"
    )


def log_line(msg: str) -> None:
    if not state.quiet:
        err.print(msg, highlight=False, soft_wrap=True)


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
                console=err,
            )
            self.trials = self.progress.add_task("trials", total=1, info="", visible=False)
            self.steps = self.progress.add_task("run", total=1, info="", visible=False)
            self.progress.start()
        return self.progress

    def search_started(self, spec, run_dir: Path, finished: int) -> None:
        m = spec.model
        self.start_finished = finished
        resumed = f", resuming a study that holds {finished} finished" if finished else ""
        log_line(
            f"searching {m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}) for "
            f"{spec.search.n_trials} trials{resumed} -> {run_dir}"
        )
        if self.live:
            self._bars().update(self.trials, total=spec.search.n_trials, completed=finished, visible=True)

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
        if self.live:
            bars = self._bars()
            bars.update(self.trials, completed=ev.finished, info=best)
            bars.console.print(
                f"trial {ev.number:>3} {ev.state:<8} {value}  ({ev.seconds:.1f}s){where}", highlight=False
            )
        else:
            # the study's pace since this process started, whoever ran the trials (shared studies)
            gained = max(1, ev.finished - self.start_finished)
            eta = (time.perf_counter() - self.t0) / gained * max(0, ev.n_trials - ev.finished)
            running = f", {ev.running} running" if ev.running else ""
            log_line(
                f"trial {ev.number} {ev.state} {value} ({ev.seconds:.1f}s){where} "
                f"[{ev.finished}/{ev.n_trials} finished in the study{running}; {len(self.ran_here)} ran here] "
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
            log_line(
                f"coord check passed (widths {record['widths'][0]}..{record['widths'][-1]}, largest |slope| "
                f"{record['largest_slope']}, {record['seconds']:.1f}s)"
            )
        elif v == "skipped":
            err.print(
                "[yellow]warning:[/] coord check skipped (--skip-check); µP is not verified", highlight=False
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_plan(p: Any) -> None:
    """A ``transfer.Plan`` as a table: shape, parameters, FLOPs, memory, hparams, tuning cost."""
    c = p.cost
    table = Table(title=f"target plan: {p.target_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("width", f"{p.spec.model.width} (proxy {p.proxy_width}, base {p.spec.model.base_width})")
    table.add_row("parameters", f"{human(c.params)} ({c.params:,})")
    table.add_row("FLOPs / step", human(c.flops_per_step))
    table.add_row("FLOPs total", f"{human(c.total_flops)} over {c.steps} steps")
    one = "fits" if c.memory_bytes <= p.gpu_gib * (1 << 30) else "does not fit"
    table.add_row(
        "memory (est.)", f"{human_bytes(c.memory_bytes)} in one process ({one} in {p.gpu_gib:g} GiB)"
    )
    if p.nproc > 1:
        table.add_row(
            "parallel", f"{p.spec.train.parallel} over {p.nproc} GPUs (train.parallel: ddp or fsdp)"
        )
        for strategy, g in p.per_gpu.items():
            fit = "fits" if g.fits(p.gpu_gib) else "does not fit"
            table.add_row(f"per GPU, {strategy}", f"{human_bytes(g.total)}: {fit} in {p.gpu_gib:g} GiB")
    table.add_row(
        "hparams (the spec's; not searched yet)" if p.search_planned else "hparams",
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(p.hparams).items()),
    )
    for adj in p.adjustments:
        table.add_row("law applied", adj["description"])
    if p.search_flops:
        planned = (
            f"planned: {p.provenance['n_trials']} trials x {human(p.provenance['trial_flops'], ' FLOPs')} each; "
            if p.search_planned
            else ""
        )
        table.add_row(
            "tuning cost",
            f"search compute = {p.tuning_cost_pct:.1f}% of the target run "
            f"({planned}{human(p.search_flops)} / {human(c.total_flops)} FLOPs)",
        )
    out.print(table)
    for w in p.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


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


def print_report(rep: Any, top: int) -> None:
    """The report as rich tables: top trials, winning HPs, importances, tuning cost, figures."""
    c = rep.counts()
    m = rep.spec.model
    out.print(
        f"[bold]{rep.run_dir}[/]: {m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}); "
        f"{c['finished']} of {rep.n_trials()} trials finished ({c['complete']} complete, "
        f"{c['diverged']} diverged, {c['failed']} failed, {c['running']} running)",
        highlight=False,
    )
    names = rep.searched()
    best_number = (rep.best or {}).get("provenance", {}).get("trial_number")
    table = Table(title=f"top {top} trials", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for col in ("trial", "loss", *names, "time"):
        table.add_column(col, justify="right", min_width=len(col))
    for _, r in rep.top(top).iterrows():
        style = "bold green" if r["number"] == best_number else None
        secs = r.get("seconds")
        cells = [
            str(int(r["number"])),
            f"{r['loss']:.4f}",
            *[fmt_value(r.get(n)) for n in names],
            fmt_secs(secs) if isinstance(secs, float) and math.isfinite(secs) else "-",
        ]
        table.add_row(*cells, style=style)
    out.print(table)
    if rep.best is not None:
        searched = set(rep.spec.search.space)
        hp = Table(title=f"winning hyperparameters (trial #{best_number}) -> best.yaml", title_justify="left")
        hp.add_column("hparam")
        hp.add_column("value", justify="right")
        hp.add_column("importance", justify="right")
        for k, v in rep.best["hparams"].items():
            imp = rep.importances.get(k)
            hp.add_row(
                k if k in searched else f"[dim]{k}[/]",
                fmt_value(v) if k in searched else f"[dim]{fmt_value(v)} (default)[/]",
                f"{imp:.2f} " + "█" * round(imp * 20) if imp is not None else "",
            )
        out.print(hp)
    for line in ladder_lines((rep.best or {}).get("provenance", {}).get("ladder")):
        out.print(line, highlight=False)
    out.print(f"importances: {rep.importance_note}", highlight=False)
    for line in rep.cost_lines():
        out.print(f"tuning cost: {line}", highlight=False)
    for p in rep.figures:
        out.print(f"figure: {p}", highlight=False)


def fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_sweep(res: Any) -> None:
    """One table of optima per size axis (width, depth), the drifts, bigger-is-better, the flags."""
    for a in (res.analyses or {res.analysis.axis: res.analysis}).values():
        _print_sweep_axis(a, len(res.grid.seeds))
    out.print(f"wrote {', '.join(str(p) for p in res.files.values())}", highlight=False, soft_wrap=True)


def _print_sweep_axis(a: Any, n: int) -> None:
    from . import sweep as sweep_mod

    axis = a.axis
    table = Table(title=f"{axis} sweep of {a.param}, {n} seed{'s' if n > 1 else ''} per point")
    for col in (
        "",
        axis,
        f"best {a.param} (grid)",
        "refined",
        sweep_mod.axis_label(a.param),
        "loss",
        "interior",
    ):
        table.add_column(col, justify="right" if col not in ("", "interior") else "left")
    for o in a.optima:
        table.add_row(
            NAMES.get(o.parametrization, o.parametrization),
            str(getattr(o, axis)),
            f"{o.value:.4g}",
            f"{o.value_refined:.4g}",
            f"{o.x_refined:+.2f}",
            f"{o.loss:.4f}",
            "yes" if o.interior else "no",
        )
    out.print(table)
    for par, d in a.drift.items():
        bound = " (a bound: an optimum is at the grid edge)" if d.bound else ""
        out.print(
            f"{NAMES.get(par, par)} drift of the optimum, {axis} {d.narrow} -> {d.wide}: "
            f"{d.drift:+.2f} log2 (grid {d.drift_grid:+.0f}){bound}",
            highlight=False,
        )
    bigger = "wider" if axis == "width" else "deeper"
    for par, w in a.wider.items():
        verdict = "yes" if w.ok_at_choice else f"no (+{w.worst_increase_at_choice:.4f})"
        out.print(
            f"{NAMES.get(par, par)} {bigger} is better at {a.param}={w.choice_value:.4g}: {verdict}",
            highlight=False,
        )
    for flag in a.flags:
        err.print(f"[yellow]flag:[/] {flag}", highlight=False)


def print_coord_check(res: Any) -> None:
    """The verdict line and the slope table ((layer, measure) × step) of a coord check and its
    control. The modules inside the blocks are shown only where they fail (the CSV has them all)."""
    names = {"x": "|x|", "dx": "|x-x0|", "own": "own update"}
    for r in [res] + ([res.control] if res.control is not None else []):
        out.print(r.message(), highlight=False, soft_wrap=True)
        table = Table(
            title=f"slope of log size against log {r.axis} (lr {r.lr:g}, {r.seeds} seeds; limits "
            f"|x|, |x-x0| ±{r.limits['x']:g}, own update ±{r.limits['own']:g})",
            title_justify="left",
        )
        table.add_column("layer")
        table.add_column("measure")
        for t in range(r.steps):
            table.add_column(f"t={t}", justify="right")
        s = r.slopes[r.slopes.status != "not_found"]
        for (layer, metric), g in s.groupby(["layer", "metric"], sort=False):
            if g.kind.iloc[0] == "leaf" and not (g.status == "fail").any():
                continue
            cells = {x.t: x for x in g.itertuples()}
            row = []
            for t in range(r.steps):
                x = cells.get(t)
                if x is None:
                    row.append("")
                    continue
                text = f"{x.slope:+.2f}" if math.isfinite(x.slope) else x.status
                style = {"fail": "bold red", "exempt": "dim"}.get(x.status, "")
                row.append(f"[{style}]{text}[/]" if style else text)
            table.add_row(layer, names.get(metric, metric), *row)
        out.print(table)
    if res.control is not None and res.control.passed:
        err.print(
            "[yellow]warning:[/] the SP control passed too, so this check cannot tell µP from SP here; "
            "raise --lr or the widths",
            highlight=False,
        )
