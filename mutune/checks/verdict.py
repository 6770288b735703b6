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

- ``x`` of ``attn_scale`` (the attention's scale × head dim, read once: :mod:`.scores`): µP's 1/d
  attention (or any constant scale with a fixed head dim) keeps it the same at every width, exactly;
  1/√d_head with a growing head dim makes it grow like width^+0.5, exactly. Being exact, its limit
  (``scale``) is tight, 0.1: the violation clears it 5×, where on the logits themselves it showed at
  +0.3 to +0.5 against a limit of 0.3.

A slope passes when |slope − expected| ≤ its limit (:data:`LIMITS`). The expected slope is 0
(µP: nothing grows or shrinks with width) unless the parametrization says otherwise for a kind of
layer and measure (``Parametrization.expected_slopes``, with its reason in the CSV: u-µP's embedding
moves like width^-1/2 by its LR rule). Named exceptions, status ``exempt`` in the slopes CSV with the
reason, never hidden:

- attention logits may shrink at any step (µP's 1/d attention times q and k that are not yet
  aligned shrinks like d_head^-1/2 until training aligns them, TP5 App. D.1); they may not grow;
- the output logits may shrink while t < 2 (µP's constant-std readout times α_out/m gives
  width^-1/2 at init, and one Adam step of sign-like updates still carries it);
- a measure that is exactly 0 at every width (a zero-initialised readout at t = 0) has no slope.

The limits come from measurements (docs/mup.md §3 has the margin table, ``bench/coord_margins.py``
reproduces it): correct µP against each deliberate violation, on the gate's widths and seeds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..units import around

# |slope| limits per measure; see the module doc and docs/mup.md §3 for the measurements
LIMITS = {"x": 0.3, "dx": 0.3, "own": 0.5, "scale": 0.1}
COLUMNS = {"x": "l1", "dx": "dl1", "own": "own"}
MEASURES = {"x": "|x|", "dx": "|x-x0|", "own": "own update"}  # how every output names the measures
TRANSIENT_STEPS = 2
GATED_KINDS = {
    "x": ("embedding", "block", "other", "attn_logits", "attn_scale", "logits"),
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


def _row(
    layer: str,
    kind: str,
    metric: str,
    t: int,
    mean: pd.Series,
    limit: float,
    axis: str,
    expected: tuple[float, str] = (0.0, ""),
) -> dict:
    widths, values = mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)
    slope, status, reason = float("nan"), "ok", ""
    want, why = expected
    if not np.all(np.isfinite(values)):
        bad = int(widths[~np.isfinite(values)][0])
        status, reason = "fail", f"non-finite at {axis} {bad} (diverged: lower the check's LR?)"
    elif np.all(values <= 0):
        status, reason = "exempt", f"exactly 0 at every {axis} (zero-initialised, or never changed), no slope"
    elif np.any(values <= 0):
        status, reason = "fail", f"0 at some {axis}s only"
    else:
        slope = float(np.polyfit(np.log(widths), np.log(values), 1)[0])
        if abs(slope - want) > limit:
            reason = _exemption(kind, metric, t, slope - want)
            status = "exempt" if reason else "fail"
            if not reason:
                reason = f"|slope{f' - ({want:+g})' if want else ''}| {abs(slope - want):.2f} > {limit}"
        if want and status == "ok":
            reason = f"expected {want:+g}: {why}"
    return {
        "layer": layer,
        "kind": kind,
        "metric": metric,
        "t": int(t),
        "slope": slope,
        "expected": want,
        "limit": limit,
        "status": status,
        "reason": reason,
    }


def slopes(
    records: pd.DataFrame,
    limits: dict[str, float] | None = None,
    axis: str = "width",
    expected: Mapping[tuple[str, str], tuple[float, str]] | None = None,
) -> pd.DataFrame:
    """One row per (layer, measure, step): the slope against log ``axis`` (width, or depth for a
    check across depths), the slope expected (by kind of layer and measure; 0 unless ``expected``
    says otherwise, and only along width), its limit, status (ok, exempt, fail) and reason."""
    limits = {**LIMITS, **(limits or {})}
    expected = (expected or {}) if axis == "width" else {}
    rows = []
    for (layer, t), g in records.groupby(["layer", "t"], sort=False):
        kind = g.kind.iloc[0]
        for metric, col in COLUMNS.items():
            if kind not in GATED_KINDS[metric] or (metric != "x" and t == 0) or col not in g:
                continue
            if g[col].isna().all():
                continue
            mean = g.groupby(axis)[col].mean().sort_index()
            want = expected.get((kind, metric), (0.0, ""))
            limit = limits["scale"] if kind == "attn_scale" else limits[metric]
            rows.append(_row(layer, kind, metric, int(t), mean, limit, axis, want))
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(
            columns=["layer", "kind", "metric", "t", "slope", "expected", "limit", "status", "reason"]
        )
    order = {layer: i for i, layer in enumerate(dict.fromkeys(records.layer))}
    m_order = {m: i for i, m in enumerate(COLUMNS)}
    out["_l"], out["_m"] = out.layer.map(order), out.metric.map(m_order)
    return out.sort_values(["t", "_m", "_l"]).drop(columns=["_l", "_m"]).reset_index(drop=True)


def failures(s: pd.DataFrame) -> list[str]:
    """One line per failing row, the worst (relative to its limit) first."""
    fails = s[s.status == "fail"].copy()
    fails["size"] = (deviation(fails).abs() / fails.limit).fillna(np.inf)
    fails = fails.sort_values("size", ascending=False)
    return [
        f"{r.layer} {'scale × head dim' if r.kind == 'attn_scale' else MEASURES[r.metric] + f' at t={r.t}'}: "
        + (f"slope {r.slope:+.2f} (limit {_around(r)}±{r.limit:g})" if np.isfinite(r.slope) else r.reason)
        for r in fails.itertuples()
    ]


def deviation(s: pd.DataFrame) -> pd.Series:
    """Each row's slope less the slope expected of it (0 in a table from before expectations)."""
    return s.slope - (s.expected.fillna(0.0) if "expected" in s else 0.0)


def _around(r: object) -> str:
    return around(getattr(r, "expected", 0.0))


def gated(s: pd.DataFrame) -> pd.DataFrame:
    """The rows the limits alone decided: not exempt, nor shrinking rows that would be exempt."""
    dev = deviation(s)
    would_be_exempt = pd.Series(
        [bool(_exemption(k, m, t, d)) for k, m, t, d in zip(s.kind, s.metric, s.t, dev, strict=True)],
        index=s.index,
        dtype=bool,
    )
    return s[(s.status != "exempt") & ~would_be_exempt]
