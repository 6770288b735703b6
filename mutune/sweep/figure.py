"""The sweep's figure: TP5 Figure 1, loss against the swept value, one curve per width (or depth)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import PARAMETRIZATION_NAMES
from ..files import atomic_write
from .analysis import Analysis
from .grid import PARAMETRIZATIONS, axis_label, from_x

NAMES = PARAMETRIZATION_NAMES


def plot(analysis: Analysis, path: Path, title: str = "") -> None:
    """TP5 Figure 1: final loss against log2(value), one curve per size (width or
    depth, the analysis axis), one panel per parametrization.

    Diverged values are drawn as crosses on the top edge; losses above the window (which is
    sized around the optima, so a blow-up does not flatten every curve) as triangles there.
    The parabolic optimum of each size is a star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = analysis.curves
    pars = [p for p in PARAMETRIZATIONS if p in set(table.parametrization)]
    axis = analysis.axis
    widths = sorted(set(table[axis]))
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.85, len(widths))), strict=True))
    finite = table.loss[np.isfinite(table.loss)]
    if len(finite):
        best = min(o.loss for o in analysis.optima if math.isfinite(o.loss))
        span = max(float(np.percentile(finite, 50)) - best, 0.05)
        top = min(float(finite.max()), best + 3.0 * span)
        bottom = best - 0.08 * (top - best)
        top += 0.08 * (top - best)
    else:
        bottom, top = 0.0, 1.0
    fig, axes = plt.subplots(
        1, len(pars), figsize=(4.6 * len(pars) + 1.6, 4.4), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, par in zip(axes[0], pars, strict=True):
        sub = table[table.parametrization == par]
        for w in widths:
            c = sub[sub[axis] == w].sort_values("x")
            if c.empty:
                continue
            color = colors[w]
            ok = np.isfinite(c.loss)
            y = c.loss.where(ok)
            ax.plot(c.x, y, "-o", color=color, ms=3.5, lw=1.5, label=f"{axis} {w}")
            if (c.n_seeds > 1).any():
                ax.fill_between(c.x, y - c.loss_std, y + c.loss_std, color=color, alpha=0.15, lw=0)
            # markers on the top edge, drawn unclipped but kept out of the layout computation
            above, div = c[ok & (c.loss > top)], c[~ok]
            for rows, style in ((above, {"marker": "^", "ms": 6}), (div, {"marker": "x", "ms": 7, "mew": 2})):
                if len(rows):
                    (edge,) = ax.plot(rows.x, [top] * len(rows), ls="", color=color, clip_on=False, **style)
                    edge.set_in_layout(False)
            o = analysis.optimum(par, w)
            if math.isfinite(o.x_refined):
                ax.plot(o.x_refined, o.loss_refined, "*", color=color, ms=12, mec="black", mew=0.6, zorder=5)
        d = analysis.drift.get(par)
        head = NAMES.get(par, par)
        if d is not None:
            head += f"\noptimum drift, {axis} {d.narrow}→{d.wide}: {d.drift:+.2f} log2"
            if d.bound:
                head += "\n(a bound: an optimum is at a grid edge)"
        ax.set_title(head, fontsize=10)
        ax.set_xlabel(axis_label(analysis.param))
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom, top)
        # the grid's values on a top axis, so the reader need not take powers of two
        xs = sorted(set(sub.x))
        step = max(1, math.ceil(len(xs) / 6))
        top_axis = ax.secondary_xaxis("top")
        top_axis.set_xticks(xs[::step], [f"{from_x(analysis.param, x):.2g}" for x in xs[::step]], fontsize=7)
        top_axis.tick_params(length=2, pad=1)
        if xs and all(abs(x - round(x)) < 1e-9 for x in xs):
            ax.set_xticks([round(x) for x in xs])
    axes[0][0].set_ylabel("final validation loss")
    from matplotlib.lines import Line2D

    handles, labels = axes[0][0].get_legend_handles_labels()
    marks = [
        Line2D([], [], ls="", marker="*", color="grey", mec="black", ms=10, label="optimum (parabola)"),
        Line2D([], [], ls="", marker="x", color="grey", mew=2, label="diverged"),
        Line2D([], [], ls="", marker="^", color="grey", label="above the window"),
    ]
    fig.legend(
        handles + marks, labels + [m.get_label() for m in marks], fontsize=8, loc="outside right upper"
    )
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)
