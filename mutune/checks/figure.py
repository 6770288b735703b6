"""The coord check's figure: TP5 Figure 5 style, mean |x| against width, one panel per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import TRANSIENT_STEPS


def plot_png(runs: list[Any], path: Path) -> None:
    """TP5 Figure 5 style: one panel per step, one line per layer, mean |x| against width, log-log;
    one row per parametrization (SP above µP, as in the paper). Failing layers are drawn solid and
    thick, the rest thin; the title carries the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: r.parametrization != "sp")
    steps = runs[0].steps
    layers = list(dict.fromkeys(layer for r in runs for layer in r.records.layer))
    cmap = plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")
    colors = {layer: cmap(i % cmap.N) for i, layer in enumerate(layers)}
    from matplotlib.ticker import NullFormatter

    legend_w = 1.5  # inches kept free on the right for the legend
    fig, axes = plt.subplots(
        len(runs), steps, figsize=(2.7 * steps + legend_w, 2.7 * len(runs) + 0.7), squeeze=False, sharex=True
    )
    for row, r in enumerate(runs):
        mean = r.records.groupby(["layer", "t", "width"]).l1.mean()
        status = {(x.layer, x.t): x.status for x in r.slopes.itertuples()}
        name = "µP" if r.parametrization == "mup" else r.parametrization.upper()
        for t in range(steps):
            ax = axes[row][t]
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
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(r.widths)
            ax.set_xticklabels([str(w) for w in r.widths], fontsize=7)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{name}  t={t}", fontsize=9)
            if row == len(runs) - 1:
                ax.set_xlabel("width", fontsize=8)
            if t == 0:
                ax.set_ylabel(f"{name}: mean |x|", fontsize=8)
    from matplotlib.lines import Line2D

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
    verdicts = ", ".join(
        f"{'µP' if r.parametrization == 'mup' else r.parametrization.upper()} {r.verdict.upper()}"
        for r in runs
    )
    r0 = runs[0]
    fig.suptitle(
        f"coord check: {verdicts}    lr {r0.lr:g}, {r0.seeds} seeds; pass: |slope of log mean|x| vs log width| "
        f"<= {r0.threshold} (logits may shrink for t < {TRANSIENT_STEPS}); "
        "thick: failing, dashed: exempt",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1 - legend_w / fig.get_figwidth(), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
