"""The report's figures: search history, parameters against loss, and proxy/target loss curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import config

if TYPE_CHECKING:
    from .report import Report


def _is_log(p: config.ParamSpace) -> bool:
    return p.type == "log_uniform" or (p.type == "int" and p.log)


def write_figures(rep: Report, out: Path) -> list[Path]:
    """history.png, params.png and curves.png under ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("history", _history), ("params", _params), ("curves", _curves)):
        fig = draw(rep, plt)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    rep.figures = paths
    return paths


STOPPED = "interrupted or killed (re-run on resume)"
# the fail reasons of a trial stopped from outside, not by its hyperparameters (mutune.study.loop)
STOP_REASONS = ("interrupted", "orphaned")


def _failed(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The FAIL trials, split: those that diverged or failed on their own, and those stopped from
    outside (Ctrl-C, a killed worker), which say nothing about their hyperparameters."""
    if not len(df):
        return df, df
    fail = df[df["state"] == "FAIL"]
    reasons = (
        fail["fail_reason"].fillna("").astype(str) if "fail_reason" in fail else pd.Series("", fail.index)
    )
    stopped = reasons.str.startswith(STOP_REASONS)
    return fail[~stopped], fail[stopped]


def _failed_marks(ax, xs, label: str, color: str = "tab:red") -> None:
    """Trials without a loss as crosses on the top edge of the axes: red for diverged or failed, grey
    for interrupted or killed."""
    if len(xs):
        ax.scatter(
            xs,
            [1.0] * len(xs),
            transform=ax.get_xaxis_transform(),
            marker="x",
            color=color,
            clip_on=False,
            label=label,
            zorder=3,
        )


def _history(rep: Report, plt):
    df = rep.proxy_trials()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = df[(df["state"] == "COMPLETE") & df["loss"].notna()] if len(df) else df
    if len(done):
        ax.scatter(done["number"], done["loss"], s=22, color="tab:blue", label="trial loss", zorder=2)
        best = done.sort_values("number")["loss"].cummin()
        ax.step(
            done.sort_values("number")["number"], best, where="post", color="tab:orange", label="best so far"
        )
        b = done.loc[done["loss"].idxmin()]
        ax.scatter(
            [b["number"]],
            [b["loss"]],
            marker="*",
            s=180,
            color="tab:orange",
            edgecolor="black",
            zorder=4,
            label=f"best: #{int(b['number'])} ({b['loss']:.4f})",
        )
    bad, stopped = _failed(df)
    _failed_marks(ax, bad["number"].tolist() if len(bad) else [], "diverged / failed (no loss)")
    _failed_marks(ax, stopped["number"].tolist() if len(stopped) else [], STOPPED, color="tab:gray")
    c = rep.counts()
    ax.set_title(f"{rep.study_name}: optimization history ({c['complete']} complete of {c['total']} trials)")
    ax.set_xlabel("trial number")
    ax.set_ylabel("proxy validation loss")
    if c["total"]:
        ax.set_xlim(-0.5, df["number"].max() + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if not len(done):
        ax.text(0.5, 0.5, "no complete trial yet", transform=ax.transAxes, ha="center", va="center")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _params(rep: Report, plt):
    names = rep.searched()
    df = rep.proxy_trials()
    n = max(1, len(names))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), sharey=True, squeeze=False)
    done = df[(df["state"] == "COMPLETE") & df["loss"].notna()] if len(df) else df
    bad, stopped = _failed(df)
    best_number = rep.provenance.get("trial_number")
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        name = names[i]
        space = rep.spec.search.space[name]
        if name in done:
            ax.scatter(done[name], done["loss"], s=20, color="tab:blue", label="trial")
            b = done[done["number"] == best_number]
            if len(b):
                ax.scatter(
                    b[name],
                    b["loss"],
                    marker="*",
                    s=170,
                    color="tab:orange",
                    edgecolor="black",
                    zorder=4,
                    label="best",
                )
        if name in bad and len(bad):
            _failed_marks(ax, bad[name].dropna().tolist(), "diverged / failed")
        if name in stopped and len(stopped):
            _failed_marks(ax, stopped[name].dropna().tolist(), STOPPED, color="tab:gray")
        if _is_log(space):
            _log_axis(ax, space)
        if space.type != "categorical" and space.low is not None:
            pad = (space.high / space.low) ** 0.04 if _is_log(space) else None
            if pad:
                ax.set_xlim(space.low / pad, space.high * pad)
            else:
                span = (space.high - space.low) * 0.04
                ax.set_xlim(space.low - span, space.high + span)
        imp = rep.importances.get(name)
        ax.set_title(f"{name}" + (f"  (importance {imp:.2f})" if imp is not None else ""), fontsize=10)
        ax.set_xlabel(f"{name} ({space.type}{', log axis' if _is_log(space) else ''})", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        if i % cols == 0:
            ax.set_ylabel("proxy validation loss")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, -0.02)
        )
    fig.suptitle(f"{rep.study_name}: proxy loss vs each searched hyperparameter", y=1.0)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _log_axis(ax, space: config.ParamSpace) -> None:
    """A log x-axis labelled with plain numbers (0.3, 1, 3), never overlapping minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    decades = math.log10(space.high / space.low) if space.low and space.high else 3
    subs = (1.0,) if decades > 2.5 else (1.0, 3.0) if decades > 1.2 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _late(steps: list, losses: list, fraction: float = 0.2) -> list[float]:
    """The losses logged after the first ``fraction`` of a run (all of them if none are)."""
    if not steps:
        return []
    cut = fraction * max(steps)
    tail = [float(v) for st, v in zip(steps, losses, strict=True) if st > cut]
    return tail or [float(v) for v in losses]


def _curves(rep: Report, plt):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = []  # (label, steps, losses, color, is_val)
    curve = rep.proxy_curve
    if curve.get("train") or curve.get("val"):
        label = f"proxy w={rep.spec.model.width} (trial #{curve['trial']})"
        tr, va = curve.get("train") or {}, curve.get("val") or {}
        series.append((label, tr.get("step", []), tr.get("train_loss", []), colors[0], False))
        series.append((label, va.get("step", []), va.get("val_loss", []), colors[0], True))
    targets = [t for t in rep.targets if t.path is not None and (t.path / "metrics.csv").is_file()]
    last = {}  # a series' label -> how its last value is named: final only for a run that finished
    for i, t in enumerate(targets):
        m = pd.read_csv(t.path / "metrics.csv")
        color = colors[(i + 1) % len(colors)]
        tr, va = m.dropna(subset=["train_loss"]), m.dropna(subset=["val_loss"])
        label = f"target w={t.width}"
        if t.status != "finished":
            done = int(m["step"].max()) if len(m) else 0
            last[label] = f"{t.status} at step {done}" + (f" of {t.steps}" if t.steps else "") + ", last"
        series.append((label, tr["step"].tolist(), tr["train_loss"].tolist(), color, False))
        series.append((label, va["step"].tolist(), va["val_loss"].tolist(), color, True))
    late: list[float] = []
    for label, steps, losses, color, is_val in series:
        if not steps:
            continue
        if is_val:
            word = last.get(label, "final")
            ax.plot(steps, losses, "o-", color=color, ms=4, label=f"{label} val, {word} {losses[-1]:.4f}")
        else:
            ax.plot(steps, losses, color=color, alpha=0.45, lw=1, label=f"{label} train")
        late += _late(steps, losses)
    finite = [v for v in late if math.isfinite(v)]
    if finite:  # the first steps fall from ln(vocab); zoom in on where the runs differ
        lo, hi = min(finite), max(finite)
        margin = 0.08 * ((hi - lo) or abs(hi) or 1.0)
        ax.set_ylim(lo - margin, hi + 3 * margin)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no curves recorded yet", transform=ax.transAxes, ha="center", va="center")
    if not targets:
        ax.text(
            0.02,
            0.02,
            "no target run yet: mutune transfer RUN_DIR --to width=W",
            transform=ax.transAxes,
            fontsize=8,
            color="gray",
        )
    ax.set_title(f"{rep.study_name}: best proxy trial vs target run(s), same hyperparameters")
    ax.set_xlabel("step (the first steps, falling from ln(vocab), are above the top edge)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return fig
