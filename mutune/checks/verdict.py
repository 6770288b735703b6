"""The coord check's verdict: slopes of log size against log width, and what each one may do.

Three measures per layer (:mod:`.recorder`), each fitted per step t as the slope of log(mean over
seeds) against log(width):

- ``x``: mean |x_t|, the size of the activation (embedding, blocks, other modules, attention and
  output logits). Growth is over-updating (SP's logits, a readout without 1/m, 1/√d attention
  with a growing head dim); shrinking is a vanishing layer.
- ``dx``: mean |x_t − x_0| for t ≥ 1, how much the activation has moved since init. Under-updating
  (an LR divided by a power of m too many) shrinks it even where |x_t| still looks fine.
- ``own``: for every module holding parameters inside the blocks (and outside, but not the
  embeddings and readouts, which ``x``/``dx`` of the embedding and logits already cover),
  mean |f(x; θ_t) − f(x; θ_0)| for t ≥ 1: the change due to its own parameters' update. µP wants
  every layer's own update to move its output by Θ(1) (TP5 §5); a wrong LR for one class of
  parameters (norm gains, biases) shows here and nowhere else.

A slope passes when |slope| ≤ its limit (:data:`LIMITS`). Named exceptions, status ``exempt`` in
the slopes CSV with the reason, never hidden:

- attention logits may shrink at any step (µP's 1/d attention times q and k that are not yet
  aligned shrinks like d_head^-1/2 until training aligns them, TP5 App. D.1); they may not grow;
- the output logits may shrink while t < 2 (µP's constant-std readout times α_out/m gives
  width^-1/2 at init, and one Adam step of sign-like updates still carries it);
- a measure that is exactly 0 at every width (a zero-initialised readout at t = 0) has no slope.

The limits come from measurements (docs/mup.md §3 has the margin table, ``bench/coord_margins.py``
reproduces it): correct µP against each deliberate violation, on the gate's widths and seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# |slope| limits per measure; see the module doc and docs/mup.md §3 for the measurements
LIMITS = {"x": 0.3, "dx": 0.3, "own": 0.5}
COLUMNS = {"x": "l1", "dx": "dl1", "own": "own"}
MEASURES = {"x": "|x|", "dx": "|x-x0|", "own": "own update"}  # how every output names the measures
TRANSIENT_STEPS = 2
GATED_KINDS = {
    "x": ("embedding", "block", "other", "attn_logits", "logits"),
    "dx": ("embedding", "block", "other", "attn_logits", "logits"),
    "own": ("leaf", "other"),
}


def _exemption(kind: str, metric: str, t: int, slope: float) -> str:
    """Why a shrinking slope beyond its limit is allowed, or "" when it is not."""
    if slope >= 0:
        return ""
    if kind == "attn_logits":
        return (
            "attention logits may shrink: 1/d attention on q and k that training has not aligned yet "
            "shrinks like d_head^-1/2 (TP5 App. D.1); growth fails"
        )
    if kind == "logits" and t < TRANSIENT_STEPS:
        return (
            "at init µP logits shrink like width^-1/2 (readout std constant, times α_out/m; TP5 App. D.1) "
            f"and one step still carries it: allowed to shrink for t < {TRANSIENT_STEPS}, never to grow"
        )
    return ""


def _row(layer: str, kind: str, metric: str, t: int, mean: pd.Series, limit: float, axis: str) -> dict:
    widths, values = mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)
    slope, status, reason = float("nan"), "ok", ""
    if not np.all(np.isfinite(values)):
        bad = int(widths[~np.isfinite(values)][0])
        status, reason = "fail", f"non-finite at {axis} {bad} (diverged: lower the check's LR?)"
    elif np.all(values <= 0):
        status, reason = "exempt", f"exactly 0 at every {axis} (zero-initialised, or never changed), no slope"
    elif np.any(values <= 0):
        status, reason = "fail", f"0 at some {axis}s only"
    else:
        slope = float(np.polyfit(np.log(widths), np.log(values), 1)[0])
        if abs(slope) > limit:
            reason = _exemption(kind, metric, t, slope)
            status = "exempt" if reason else "fail"
            if not reason:
                reason = f"|slope| {abs(slope):.2f} > {limit}"
    return {
        "layer": layer,
        "kind": kind,
        "metric": metric,
        "t": int(t),
        "slope": slope,
        "limit": limit,
        "status": status,
        "reason": reason,
    }


def slopes(
    records: pd.DataFrame, limits: dict[str, float] | None = None, axis: str = "width"
) -> pd.DataFrame:
    """One row per (layer, measure, step): the slope against log ``axis`` (width, or depth for a
    check across depths), its limit, status (ok, exempt, fail) and reason."""
    limits = {**LIMITS, **(limits or {})}
    rows = []
    for (layer, t), g in records.groupby(["layer", "t"], sort=False):
        kind = g.kind.iloc[0]
        for metric, col in COLUMNS.items():
            if kind not in GATED_KINDS[metric] or (metric != "x" and t == 0) or col not in g:
                continue
            if g[col].isna().all():
                continue
            mean = g.groupby(axis)[col].mean().sort_index()
            rows.append(_row(layer, kind, metric, int(t), mean, limits[metric], axis))
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["layer", "kind", "metric", "t", "slope", "limit", "status", "reason"])
    order = {layer: i for i, layer in enumerate(dict.fromkeys(records.layer))}
    m_order = {m: i for i, m in enumerate(COLUMNS)}
    out["_l"], out["_m"] = out.layer.map(order), out.metric.map(m_order)
    return out.sort_values(["t", "_m", "_l"]).drop(columns=["_l", "_m"]).reset_index(drop=True)


def failures(s: pd.DataFrame) -> list[str]:
    """One line per failing row, the worst (relative to its limit) first."""
    fails = s[s.status == "fail"].copy()
    fails["size"] = (fails.slope.abs() / fails.limit).fillna(np.inf)
    fails = fails.sort_values("size", ascending=False)
    return [
        f"{r.layer} {MEASURES[r.metric]} at t={r.t}: "
        + (f"slope {r.slope:+.2f} (limit ±{r.limit:g})" if np.isfinite(r.slope) else r.reason)
        for r in fails.itertuples()
    ]


def gated(s: pd.DataFrame) -> pd.DataFrame:
    """The rows the limits alone decided: not exempt, nor shrinking rows that would be exempt."""
    would_be_exempt = s.apply(lambda r: bool(_exemption(r.kind, r.metric, r.t, r.slope)), axis=1)
    return s[(s.status != "exempt") & ~would_be_exempt.astype(bool)]
