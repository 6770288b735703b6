"""The coord check's figure: TP5 Figure 5 style, size against width, one panel per step.

Two rows per parametrization: mean |x_t| and mean |x_t − x_0| (the second from t = 1). The
modules inside the blocks (their own-update measure) are left out of the picture to keep it
readable; the slopes CSV has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..mup import parametrizations
from .verdict import TRANSIENT_STEPS

ROWS = (("x", "l1", "mean |x_t|"), ("dx", "dl1", "mean |x_t - x_0|"))


def _panel(ax: Any, r: Any, metric: str, col: str, t: int, layers: list[str], colors: dict) -> None:
    mean = r.records[~r.records.kind.isin(("leaf", "attn_scale"))].groupby(["layer", "t", r.axis])[col].mean()
    status = {(x.layer, x.t): x.status for x in r.slopes[r.slopes.metric == metric].itertuples()}
    for layer in layers:
        if (layer, t) not in mean.index.droplevel(2):
            continue
        s = mean.loc[(layer, t)]
        s = s[s > 0]
        if s.empty:
            continue
        st = status.get((layer, t), "ok")
        ax.plot(
            s.index,
            s.values,
            marker="o",
            ms=3,
            lw=2.4 if st == "fail" else 1.0,
            ls="--" if st == "exempt" else "-",
            alpha=1.0 if st == "fail" else 0.75,
            color=colors[layer],
            label=layer,
        )


def plot_png(runs: list[Any], path: Path) -> None:
    """One panel per step, one line per layer, log-log; SP's rows above µP's (as in the paper).
    Failing layers are drawn solid and thick, exempt ones dashed; the title carries the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    runs = sorted(runs, key=lambda r: parametrizations.get(r.parametrization).coord_check != "control")
    steps = runs[0].steps
    layers = list(
        dict.fromkeys(
            x.layer for r in runs for x in r.records.itertuples() if x.kind not in ("leaf", "attn_scale")
        )
    )
    cmap = plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")
    colors = {layer: cmap(i % cmap.N) for i, layer in enumerate(layers)}
    legend_w = 1.8  # inches kept free on the right for the legend
    n_rows = len(runs) * len(ROWS)
    fig, axes = plt.subplots(
        n_rows, steps, figsize=(2.7 * steps + legend_w, 2.5 * n_rows + 0.7), squeeze=False, sharex=True
    )
    for i, r in enumerate(runs):
        name = parametrizations.label(r.parametrization)
        for j, (metric, col, label) in enumerate(ROWS):
            row = i * len(ROWS) + j
            for t in range(steps):
                ax = axes[row][t]
                if metric == "x" or t > 0:
                    _panel(ax, r, metric, col, t, layers, colors)
                else:
                    ax.set_axis_off()
                    continue
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xticks(r.points)
                ax.set_xticklabels([str(w) for w in r.points], fontsize=7)
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.tick_params(axis="y", labelsize=7)
                ax.grid(True, which="major", alpha=0.3)
                ax.set_title(f"{name}  t={t}", fontsize=9)
                if row == n_rows - 1:
                    ax.set_xlabel(r.axis, fontsize=8)
                if t == (0 if metric == "x" else 1):
                    ax.set_ylabel(f"{name}: {label}", fontsize=8)
    drawn = {line.get_label() for ax in axes.flat for line in ax.get_lines()}
    labels = [layer for layer in layers if layer in drawn]
    handles = [Line2D([], [], color=colors[layer], marker="o", ms=3, lw=1.2) for layer in labels]
    fig.legend(
        handles,
        labels,
        loc="center right",
        fontsize=7,
        frameon=False,
        title="layer",
        title_fontsize=8,
        bbox_to_anchor=(1.0, 0.5),
    )
    verdicts = ", ".join(f"{parametrizations.label(r.parametrization)} {r.verdict.upper()}" for r in runs)
    r0 = runs[0]
    fig.suptitle(
        f"coord check: {verdicts}    lr {r0.lr:g}, {r0.seeds} seeds; pass: |slope against log {r0.axis}| <= "
        f"{r0.limits['x']:g} (own updates of the modules inside the blocks, in the CSV: {r0.limits['own']:g}); "
        f"logits may shrink for t < {TRANSIENT_STEPS}, attention logits always; "
        "thick: failing, dashed: exempt",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1 - legend_w / fig.get_figwidth(), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
