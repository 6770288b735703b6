"""``mutune report``: a search summarised for people (tables) or machines (CSV, JSON, Markdown), with its
figures; the tables, and the finalists ladder from best.yaml, rendered here."""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from .. import config
from .app import app
from .console import fmt_secs, log_line, out, show
from .target import decided


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    md = "md"


@app.command()
def report(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="a search run dir (default: the one under ./runs used last)",
        ),
    ] = None,
    fmt: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            "-f",
            metavar="table|csv|json|md",
            help="table for people; csv, json or md for machines and CI",
        ),
    ] = ReportFormat.table,
    top: Annotated[
        int, typer.Option("--top", min=1, metavar="N", help="how many of the best trials to list")
    ] = 10,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="where the PNGs and report.json go; default RUN_DIR/report"
        ),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNGs")] = False,
) -> None:
    """Summarise a search: top trials, winning HPs, importances, tuning cost, PNGs.

    Writes history.png, params.png, curves.png and report.json under RUN_DIR/report/.

    Example: mutune report runs/quickstart --format md >> $GITHUB_STEP_SUMMARY
    """
    from .. import report as report_mod

    if run_dir is None:
        run_dir = config.RunDir.latest().path
        log_line(f"using the latest run: {run_dir}")
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
    best_number = rep.provenance.get("trial_number")
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
    show(table)
    if rep.best is not None:
        searched = set(rep.spec.search.space)
        hp = Table(title=f"winning hyperparameters (trial #{best_number}) -> best.yaml", title_justify="left")
        hp.add_column("hparam")
        hp.add_column("value", justify="right")
        hp.add_column("importance", justify="right")
        for k, v in vars(rep.best.hparams).items():
            imp = rep.importances.get(k)
            hp.add_row(
                k if k in searched else f"[dim]{k}[/]",
                fmt_value(v) if k in searched else f"[dim]{fmt_value(v)} (default)[/]",
                f"{imp:.2f} " + "█" * round(imp * 20) if imp is not None else "",
            )
        show(hp)
    for line in ladder_lines(rep.provenance.get("ladder")):
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


def ladder_lines(ladder: dict | None) -> list[str]:
    """best.yaml's ladder, a line per rung: each entrant's mean loss (proxy trial number), who moved on."""
    if not ladder:
        return []
    lines = []
    for r in ladder["rungs"]:
        cells = ", ".join(
            f"#{e['trial']} {e['mean']:.4f}" if e["mean"] is not None else f"#{e['trial']} -"
            for e in r["entrants"]
        )
        kept = f"; kept {', '.join(f'#{t}' for t in r['kept'])}" if r["kept"] else ""
        where = f"{r['steps']} steps" if r.get("steps") else f"width {r['width']} x {len(r['seeds'])} seed(s)"
        lines.append(f"ladder: {where}: {cells}{kept}")
    if ladder.get("winner") is not None:
        state = "winner" if ladder["done"] else "leader so far"
        lines.append(f"ladder: {state} #{ladder['winner']} (decided at {decided(ladder)})")
    return lines
