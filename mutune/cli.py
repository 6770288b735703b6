"""The ``mutune`` command line: thin Typer commands over the core functions, plus rendering.

Exit codes everywhere: 0 success; 1 a check failed or a run diverged; 2 a user error (bad
spec, bad argument, missing file), printed as one line naming the key or file; 130 interrupted.
Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
import yaml
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

from . import __version__, config, flops
from . import checks as checks_mod
from . import docs as docs_mod
from . import report as report_mod
from . import search as search_mod
from . import sweep as sweep_mod
from . import transfer as transfer_mod
from .config import SpecError
from .events import Events, TrialEvent

app = typer.Typer(
    name="mutune",
    help="µTransfer made practical: tune hyperparameters on a narrow µP proxy, train the wide target with them "
    "unchanged.\n\nExample: mutune search configs/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()  # results: plans, tables
err = Console(stderr=True)  # progress, warnings, errors


class _State:
    verbose = False
    quiet = False
    debug = False


state = _State()


def live_display() -> bool:
    """Live bars only on an interactive terminal; plain one-line-per-event logs otherwise."""
    return err.is_terminal and not state.quiet and os.environ.get("CI", "").lower() not in ("1", "true")


def _fmt_secs(s: float) -> str:
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


def _log(msg: str) -> None:
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
        resumed = f", resuming with {finished} finished" if finished else ""
        _log(
            f"searching {m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}) for "
            f"{spec.search.n_trials} trials{resumed} -> {run_dir}"
        )
        if self.live:
            self._bars().update(self.trials, total=spec.search.n_trials, completed=finished, visible=True)

    def step(self, trial: int | None, log) -> None:
        info = f"loss {log.train_loss:.4f}  {flops.human(log.tokens_per_s)} tok/s"
        label = f"trial {trial}" if trial is not None else "target"
        line = f"{label} step {log.step}/{log.steps} {info} eta {_fmt_secs(log.eta)}"
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
            _log(line)

    def trial_ended(self, ev: TrialEvent) -> None:
        self.done_here += 1
        best = f"best {ev.best_value:.4f} (#{ev.best_number})" if ev.best_value is not None else "best -"
        value = f"loss {ev.value:.4f}" if ev.value is not None else ev.reason or ""
        if self.live:
            bars = self._bars()
            bars.update(self.trials, completed=ev.finished, info=best)
            bars.console.print(
                f"trial {ev.number:>3} {ev.state:<8} {value}  ({ev.seconds:.1f}s)", highlight=False
            )
        else:
            remaining = max(0, ev.n_trials - ev.finished)
            eta = (time.perf_counter() - self.t0) / self.done_here * remaining
            _log(
                f"trial {ev.number} {ev.state} {value} ({ev.seconds:.1f}s) [{ev.finished}/{ev.n_trials}] {best} "
                f"eta {_fmt_secs(eta)}"
            )

    def planned(self, plan) -> None:
        self.close()
        print_plan(plan)

    def coord_checked(self, record: dict) -> None:
        v = record.get("verdict")
        if v == "passed" and "seconds" in record:
            _log(
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


def print_plan(p: transfer_mod.Plan) -> None:
    c = p.cost
    table = Table(title=f"target plan: {p.target_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("width", f"{p.spec.model.width} (proxy {p.proxy_width}, base {p.spec.model.base_width})")
    table.add_row("parameters", f"{flops.human(c.params)} ({c.params:,})")
    table.add_row("FLOPs / step", flops.human(c.flops_per_step))
    table.add_row("FLOPs total", f"{flops.human(c.total_flops)} over {c.steps} steps")
    table.add_row("memory (est.)", flops.human_bytes(c.memory_bytes))
    table.add_row(
        "hparams",
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(p.hparams).items()),
    )
    if p.search_flops:
        table.add_row(
            "tuning cost",
            f"search compute = {p.tuning_cost_pct:.1f}% of the target run "
            f"({flops.human(p.search_flops)} / {flops.human(c.total_flops)} FLOPs)",
        )
    out.print(table)
    for w in p.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


@contextlib.contextmanager
def _interruptible(display: Display, run_dir: Path | None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during a search or sweep: close the live display, say how to resume, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        display.close()
        _resume_hint(run_dir)
        raise typer.Exit(130) from None
    finally:
        display.close()


def _resume_hint(run_dir: Path | None) -> None:
    cmd = " ".join(shlex.quote(a) for a in ["mutune", *sys.argv[1:]])
    where = f" in {run_dir}" if run_dir else ""
    err.print(f"interrupted; finished trials are kept{where}. Resume with:\n  {cmd}", highlight=False)


def _print_target(res: transfer_mod.TransferResult) -> int:
    r = res.result
    if r is None:
        return 0
    if r.diverged:
        err.print(f"[red]target diverged:[/] {r.reason} (see {res.plan.target_dir})", highlight=False)
        return 1
    out.print(
        f"target val loss {r.final_val_loss:.4f} after {r.steps} steps ({_fmt_secs(r.seconds)}) "
        f"-> {res.plan.target_dir}",
        highlight=False,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# Commands

OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="dotted KEY=VALUE overrides, e.g. train.steps=50 search.n_trials=8", show_default=False
    ),
]


@app.command()
def search(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="default: runs/<name>")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny widths, few steps and trials (CI)")] = False,
    no_transfer: Annotated[
        bool, typer.Option("--no-transfer", help="do not train the target afterwards")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", help="parallel worker processes on this machine")] = 1,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL (e.g. postgresql://...) to share a study"),
    ] = None,
    skip_check: Annotated[
        bool,
        typer.Option("--skip-check", help="search even if the coord check fails (recorded in best.yaml)"),
    ] = False,
) -> None:
    """Search hyperparameters on the µP proxy, write best.yaml, then train the target.

    A fast coord check runs first and stops a µP model that is not µP. Re-running the same command
    resumes the study.

    Example: mutune search configs/quickstart.yaml search.n_trials=8
    """
    extra = [f"search.storage={storage}"] if storage else []
    spec = config.load_spec(config_path, [*(overrides or []), *extra])
    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = Display()
    with _interruptible(display, where):
        res = search_mod.search(
            spec,
            run_dir=run_dir,
            smoke=smoke,
            transfer=not no_transfer,
            workers=workers,
            skip_check=skip_check,
            events=display,
        )
    prov = res.best["provenance"]
    out.print(
        f"best trial #{prov['trial_number']} loss {prov['loss']:.4f} of {res.n_finished} finished -> "
        f"{res.run_dir / 'best.yaml'}",
        highlight=False,
    )
    if res.target is not None:
        raise typer.Exit(_print_target(res.target))


@app.command()
def transfer(
    run_dir: Annotated[
        Path | None, typer.Argument(help="a search run dir; default: the latest under ./runs")
    ] = None,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to", help="KEY=VALUE for the target, e.g. width=1024 (repeatable); default: the spec's target"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="plan only (params, FLOPs, memory); allocate nothing")
    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny widths and few steps (CI)")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue the target's last checkpoint")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="apply a best.yaml tuned for another family/base width/parametrization"),
    ] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="processes (GPUs) on this machine, via torchrun")] = 1,
) -> None:
    """Train the target with the search's winning hyperparameters, unchanged.

    Example: mutune transfer runs/quickstart --to width=1024
    """
    if nproc < 1:
        raise SpecError("--nproc", f"must be >= 1, got {nproc}")
    if run_dir is None:
        run_dir = transfer_mod.latest_run()
        _log(f"using the latest run: {run_dir}")
    if nproc > 1 and "WORLD_SIZE" not in os.environ and not dry_run:
        _log(f"launching {nproc} processes with torchrun")
        code = transfer_mod.launch_distributed(
            run_dir, to or [], nproc, resume=resume, force=force, smoke=smoke
        )
        raise typer.Exit(code)
    rank0 = os.environ.get("RANK", "0") == "0"
    display = Display() if rank0 else Events()
    try:
        res = transfer_mod.transfer(
            run_dir, to or [], dry_run=dry_run, smoke=smoke, resume=resume, force=force, events=display
        )
    except KeyboardInterrupt:
        err.print(f"interrupted; resume with --resume (the last checkpoint is in {run_dir})", highlight=False)
        raise typer.Exit(130) from None
    finally:
        if isinstance(display, Display):
            display.close()
    raise typer.Exit(_print_target(res) if rank0 else 0)


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    md = "md"


def print_report(rep: report_mod.Report, top: int) -> None:
    """The report as rich tables: top trials, winning HPs, importances, tuning cost, figures."""
    c = rep.counts()
    m = rep.spec.model
    out.print(
        f"[bold]{rep.run_dir}[/]: {m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}); "
        f"{c['finished']} of {rep.spec.search.n_trials} trials finished ({c['complete']} complete, "
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
            *[_g(r.get(n)) for n in names],
            _fmt_secs(secs) if isinstance(secs, float) and math.isfinite(secs) else "-",
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
                _g(v) if k in searched else f"[dim]{_g(v)} (default)[/]",
                f"{imp:.2f} " + "█" * round(imp * 20) if imp is not None else "",
            )
        out.print(hp)
    out.print(f"importances: {rep.importance_note}", highlight=False)
    for line in rep.cost_lines():
        out.print(f"tuning cost: {line}", highlight=False)
    for p in rep.figures:
        out.print(f"figure: {p}", highlight=False)


def _g(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def report(
    run_dir: Annotated[
        Path | None, typer.Argument(help="a search run dir; default: the latest under ./runs")
    ] = None,
    fmt: Annotated[
        ReportFormat,
        typer.Option("--format", "-f", help="table for people; csv, json or md for machines and CI"),
    ] = ReportFormat.table,
    top: Annotated[int, typer.Option("--top", min=1, help="how many of the best trials to list")] = 10,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="where the PNGs and report.json go; default RUN_DIR/report")
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNGs")] = False,
) -> None:
    """Summarise a search: top trials, winning HPs, importances, tuning cost, PNGs.

    Writes history.png, params.png, curves.png and report.json under RUN_DIR/report/.

    Example: mutune report runs/quickstart --format md >> $GITHUB_STEP_SUMMARY
    """
    if run_dir is None:
        run_dir = transfer_mod.latest_run()
        _log(f"using the latest run: {run_dir}")
    rep = report_mod.report(run_dir)
    dest = out_dir if out_dir is not None else rep.run_dir / report_mod.REPORT_DIR
    if not no_plots:
        report_mod.write_figures(rep, dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "report.json").write_text(report_mod.to_json(rep, top))
    if fmt is ReportFormat.table:
        print_report(rep, top)
    else:
        text = {
            ReportFormat.csv: report_mod.to_csv,
            ReportFormat.json: lambda r: report_mod.to_json(r, top) + "\n",
            ReportFormat.md: lambda r: report_mod.to_markdown(r, top),
        }[fmt](rep)
        sys.stdout.write(text)


class ModelChoice(str, Enum):
    gpt = "gpt"
    mlp = "mlp"
    factory = "factory"


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="where to write the spec")] = Path("mutune.yaml"),
    model: Annotated[
        ModelChoice, typer.Option("--model", "-m", help="gpt, mlp, or factory (your own model)")
    ] = ModelChoice.gpt,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter spec: every key, its type, default and meaning.

    It validates and runs as written: mutune search PATH --smoke.

    Example: mutune init --model mlp my-mlp.yaml
    """
    if path.exists() and not force:
        raise SpecError(str(path), "already exists; pick another path or pass --force")
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    text = docs_mod.starter_spec(model.value, name=name, filename=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _log(f"wrote {path}; next: mutune search {shlex.quote(str(path))} --smoke")


@app.command("show-config")
def show_config(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="show the --smoke variant")] = False,
) -> None:
    """Print the fully resolved spec (defaults and overrides filled in) as YAML.

    Example: mutune show-config configs/quickstart.yaml train.steps=50
    """
    spec = config.load_spec(config_path, overrides or [])
    if smoke:
        spec = config.smoke(spec)
    sys.stdout.write(yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True))


@app.command("coord-check")
def coord_check(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="results go to RUN_DIR/checks; default: runs/<name>")
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny shapes (base width 32)")] = False,
    compare: Annotated[
        str | None, typer.Option("--compare", help="sp: also check the SP twin, the negative control")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="default: 0.01 (AdamW)")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="seeds per width")] = 3,
) -> None:
    """Check that activations keep their size as the model widens (µP), with a verdict.

    Trains the model at base_width × 1, 2, 4, 8, 16 for a few steps and fits the slope of every
    layer's mean |x| against width; writes CSVs and a PNG to RUN_DIR/checks. Exit 0 when the
    spec's model passes, 1 when it fails.

    Example: mutune coord-check configs/quickstart.yaml --compare sp
    """
    spec = config.load_spec(config_path, overrides or [])
    if smoke:
        spec = config.smoke(spec)
    out_dir = (run_dir or search_mod.default_run_dir(spec, smoke)) / "checks"
    res = checks_mod.coord_check(spec, compare=compare, lr=lr, seeds=seeds, out_dir=out_dir)
    for r in [res] + ([res.control] if res.control is not None else []):
        out.print(r.message(), highlight=False, soft_wrap=True)
        table = Table(
            title=f"slope of log mean|x| against log width (lr {r.lr:g}, {r.seeds} seeds)",
            title_justify="left",
        )
        table.add_column("layer")
        for t in range(r.steps):
            table.add_column(f"t={t}", justify="right")
        for layer, g in r.slopes.groupby("layer", sort=False):
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
            table.add_row(layer, *row)
        out.print(table)
    if res.control is not None and res.control.passed:
        err.print(
            "[yellow]warning:[/] the SP control passed too, so this check cannot tell µP from SP here; "
            "raise --lr or the widths",
            highlight=False,
        )
    out.print(f"-> {res.files['slopes']}, {res.files['png']}", highlight=False)
    raise typer.Exit(0 if res.passed else 1)


class SweepDisplay(Display):
    """The search display, with each sweep point named by its width, value and seed."""

    def sweep_started(self, grid, run_dir: Path, finished: int) -> None:
        resumed = f", {finished} already done" if finished else ""
        _log(
            f"sweeping {grid.param} over widths {', '.join(map(str, grid.widths))} "
            f"({' and '.join(sweep_mod.NAMES[p] for p in grid.parametrizations)}): {len(grid)} runs"
            f"{resumed} -> {run_dir / 'checks'}"
        )
        if self.live:
            self._bars().update(self.trials, total=len(grid), completed=finished, visible=True)
        self.grid, self.base = grid, finished

    def trial_ended(self, ev: TrialEvent) -> None:
        p = ev.params
        self.done_here += 1
        what = (
            f"{sweep_mod.NAMES.get(p.get('parametrization'), '?')} width {p.get('width')} "
            f"{self.grid.param}={p.get('value', float('nan')):.4g} seed {p.get('seed')}"
        )
        value = f"loss {ev.value:.4f}" if ev.value is not None else ev.reason or ev.state
        done = self.base + self.done_here
        if self.live:
            bars = self._bars()
            bars.update(self.trials, completed=done)
            bars.console.print(f"{what}: {value} ({ev.seconds:.1f}s)", highlight=False)
        else:
            _log(f"{what}: {value} ({ev.seconds:.1f}s) [{done}/{len(self.grid)}]")


def _comma_list(text: str | None, key: str, cast: type) -> list | None:
    """``--widths 64,128`` / ``--values 1e-3,3e-3``: a list of ``cast``, or a user error naming the option."""
    if text is None:
        return None
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "integers" if cast is int else "numbers"
        raise SpecError(key, f"expected comma-separated {what}, got {text!r}") from None


def print_sweep(res: sweep_mod.SweepResult) -> None:
    a = res.analysis
    n = len(res.grid.seeds)
    table = Table(title=f"width sweep of {a.param}, {n} seed{'s' if n > 1 else ''} per point")
    for col in (
        "",
        "width",
        f"best {a.param} (grid)",
        "refined",
        sweep_mod.axis_label(a.param),
        "loss",
        "interior",
    ):
        table.add_column(col, justify="right" if col not in ("", "interior") else "left")
    for o in a.optima:
        table.add_row(
            sweep_mod.NAMES.get(o.parametrization, o.parametrization),
            str(o.width),
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
            f"{sweep_mod.NAMES.get(par, par)} drift of the optimum, width {d.narrow} -> {d.wide}: "
            f"{d.drift:+.2f} log2 (grid {d.drift_grid:+.0f}){bound}",
            highlight=False,
        )
    for par, w in a.wider.items():
        verdict = "yes" if w.ok_at_choice else f"no (+{w.worst_increase_at_choice:.4f})"
        out.print(
            f"{sweep_mod.NAMES.get(par, par)} wider is better at {a.param}={w.choice_value:.4g}: {verdict}",
            highlight=False,
        )
    for flag in a.flags:
        err.print(f"[yellow]flag:[/] {flag}", highlight=False)
    out.print(f"wrote {', '.join(str(p) for p in res.files.values())}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    widths: Annotated[
        str | None,
        typer.Option("--widths", help="comma-separated widths; default: the spec's width x1,2,4,8"),
    ] = None,
    param: Annotated[
        str, typer.Option("--param", help="the hyperparameter to sweep (any of hparams)")
    ] = "lr",
    values: Annotated[
        str | None,
        typer.Option("--values", help="comma-separated values; default: the spec's value x 2^-4 ... 2^4"),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="seeds per point (spec seed, +1, ...)")] = 1,
    compare: Annotated[
        str | None, typer.Option("--compare", help="also sweep this parametrization (sp), the control")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="parallel worker processes on this machine")] = 1,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="default: runs/<name>")] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="widths 32 and 64, 3 values, few steps (CI)")
    ] = False,
    max_drift: Annotated[
        float, typer.Option("--max-drift", help="flag a µP optimum drift above this many log2 units")
    ] = 1.0,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when a µP check is flagged")] = False,
) -> None:
    """Train a width x value grid and show whether the optimum stays put (TP5 Figure 1).

    Writes checks/sweep-<param>-runs.csv, -summary.csv, .yaml and .png in the run dir. Flags (an
    optimum at the grid edge, a drift above --max-drift, a wider model doing worse) are reported;
    the exit code is 0 unless --strict. Re-running the same command resumes the sweep.

    Example: mutune sweep configs/quickstart.yaml --widths 64,128,256,512 --param lr --compare sp
    """
    spec = config.load_spec(config_path, overrides or [])
    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = SweepDisplay()
    with _interruptible(display, where):
        res = sweep_mod.sweep(
            spec,
            param,
            _comma_list(widths, "--widths", int),
            _comma_list(values, "--values", float),
            seeds=seeds,
            compare=compare,
            run_dir=run_dir,
            smoke=smoke,
            workers=workers,
            max_drift=max_drift,
            events=display,
        )
    print_sweep(res)
    raise typer.Exit(1 if strict and not res.passed else 0)


def _version(value: bool) -> None:
    if value:
        out.print(f"mutune {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="more logs (every training step)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    state.verbose, state.quiet, state.debug = verbose, quiet, debug


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--debug")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _is_click_error(e: BaseException) -> bool:
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and hasattr(e, "show")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map known errors to exit codes and one-line messages."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    # global flags work anywhere on the line (`mutune search cfg.yaml --debug`), not only first
    flags = [a for a in args if a in GLOBAL_FLAGS]
    args = flags + [a for a in args if a not in GLOBAL_FLAGS]
    state.debug = "--debug" in flags
    # pre-emption (SIGTERM) stops like Ctrl-C: the running trial is marked, the hint printed
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        rv = command.main(args=args, prog_name="mutune", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SpecError as e:
        if state.debug:
            raise
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except search_mod.SearchFailed as e:
        err.print(f"error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if _is_click_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":
                out.print(e.format_message(), markup=False, highlight=False)
                return 0
            err.print(f"error: {e.format_message()}", highlight=False, markup=False, soft_wrap=True)
            return e.exit_code
        if state.debug:
            raise
        err.print(
            f"error: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 1
