"""Scaling laws for the optimum LR across training length and batch size, fitted on the proxy.

µP fixes the width drift of the optimum, not the horizon drift: the optimal LR falls as a power of
the token horizon, LR*(D) ∝ D^-β (Bjorck et al., ICLR 2025), and µP does not remove it. So the
proxy measures it, where runs are cheap: an LR line search around the winning hyperparameters at a
few multiples of ``train.steps`` (or ``train.batch_size``), LR* at each from a parabola in log2 LR
through the grid argmin and its two neighbours (the sweeps' refinement), then a least-squares line
log2 LR* = a + k·log2(multiple). ``k`` is the exponent (LR* ∝ multiple^k, so k = -β for the
horizon), with the regression's 95% t-interval (three points or more; two points fit exactly and
have none). At transfer, a target that changes the axis by a ratio r gets LR × r^k.

AdamW's weight decay as a timescale (``train.weight_decay_timescale``): the EMA timescale of
AdamW, τ = 1/(η·λ), is worth keeping constant as a *fraction of training* (Wang & Aitchison, ICML
2025; Power Lines, Bergsma et al. 2025: τ = B/(η·λ·D)), so η·λ·steps is held at the proxy's value.
The width part is the rule table's (hidden λ·m_in, so LR·λ is constant in width); this adds the
horizon, the batch size (through steps at a fixed token count) and any LR change from a law.

This module is pure arithmetic on plain numbers (unit-tested on synthetic curves); running the
line searches is :mod:`mutune.laws_run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

AXES = {"steps": "train.steps", "batch_size": "train.batch_size"}  # the keys a law governs
EXTRAPOLATION_WARN = 8.0  # a target this far past the fitted multiples is warned about
# two-sided 95% quantiles of Student's t by degrees of freedom (then the normal's)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
_T975.update({10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042})


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t (a conservative step table, no scipy)."""
    if df >= 60:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]  # between entries, the smaller df's: wider


@dataclass
class Optimum:
    """LR* of one line search: the refined (parabola) optimum, or the grid argmin at an edge."""

    lr: float
    interior: bool
    note: str = ""


def lr_optimum(lrs: list[float], losses: list[float]) -> Optimum | None:
    """The optimum of a loss curve over learning rates (any order; non-finite losses never win).

    Refined by the parabola in log2 LR through the argmin and its neighbours; at the grid's edge the
    argmin itself, with ``interior`` False (the true optimum may lie beyond: extend the grid).
    """
    from .sweep.analysis import find_optimum  # (the sweeps' refinement; mutune.sweep loads the search)

    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    xs = [math.log2(lrs[i]) for i in order]
    ys = [losses[i] if losses[i] is not None else math.inf for i in order]
    index, x, _, interior, note = find_optimum(xs, ys)
    if index is None:
        return None
    return Optimum(lr=2.0**x, interior=interior, note=note)


@dataclass
class Law:
    """log2 LR* = intercept + exponent · log2(multiple), fitted on ``points``."""

    axis: str
    exponent: float
    intercept: float
    interval: tuple[float, float] | None  # 95% interval of the exponent; None from two points
    points: list[dict[str, Any]] = field(default_factory=list)  # {multiple, lr, interior, ...}
    flops: float = 0.0
    seconds: float = 0.0
    separate_flops: float = 0.0  # what the same points would have cost as separate runs
    seeds: int = 1
    branched: bool = False  # each LR's horizons from one WSD run's cooldown branches

    @property
    def half_width(self) -> float | None:
        return None if self.interval is None else (self.interval[1] - self.interval[0]) / 2

    @property
    def fitted_range(self) -> tuple[float, float]:
        ms = [p["multiple"] for p in self.points]
        return min(ms), max(ms)

    def lr_at(self, multiple: float) -> float:
        return 2.0 ** (self.intercept + self.exponent * math.log2(multiple))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": AXES[self.axis],
            "exponent": float(self.exponent),
            "interval": None if self.interval is None else [float(v) for v in self.interval],
            "intercept_log2_lr": float(self.intercept),
            "fit": "least squares of log2 LR* on log2 multiple; LR* per point: parabola in log2 LR "
            "through the grid argmin and its neighbours; interval: 95% t-interval of the slope",
            "points": self.points,
            "flops": float(self.flops),
            "seconds": float(self.seconds),
            "seeds": self.seeds,
            "branched": self.branched,
            "separate_flops": float(self.separate_flops or self.flops),
        }

    @classmethod
    def from_dict(cls, axis: str, d: dict[str, Any]) -> Law:
        interval = d.get("interval")
        return cls(
            axis=axis,
            exponent=float(d["exponent"]),
            intercept=float(d.get("intercept_log2_lr", 0.0)),
            interval=None if interval is None else (float(interval[0]), float(interval[1])),
            points=list(d.get("points") or []),
            flops=float(d.get("flops") or 0.0),
            seconds=float(d.get("seconds") or 0.0),
            separate_flops=float(d.get("separate_flops") or d.get("flops") or 0.0),
            seeds=int(d.get("seeds") or 1),
            branched=bool(d.get("branched")),
        )


def fit_law(axis: str, multiples: list[float], lr_stars: list[float]) -> Law:
    """Least squares of log2 LR* on log2 multiple, with the slope's 95% t-interval (n >= 3)."""
    if len(multiples) != len(lr_stars) or len(set(multiples)) < 2:
        raise ValueError(f"a law needs LR* at two or more distinct multiples, got {multiples}")
    xs = [math.log2(m) for m in multiples]
    ys = [math.log2(v) for v in lr_stars]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    interval = None
    if n >= 3:
        rss = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
        se = math.sqrt(rss / (n - 2) / sxx)
        half = t975(n - 2) * se
        interval = (slope - half, slope + half)
    points = [{"multiple": float(m), "lr": float(v)} for m, v in zip(multiples, lr_stars, strict=True)]
    return Law(axis=axis, exponent=slope, intercept=intercept, interval=interval, points=points)


# ---------------------------------------------------------------------------------------------
# At transfer


@dataclass
class Adjustment:
    """One law applied to a target: the LR before and after, and why."""

    axis: str
    ratio: float  # target value / proxy value along the axis
    exponent: float
    half_width: float | None
    lr_before: float
    lr_after: float
    extrapolation: float  # how far past the fitted multiples (1 = inside)
    applied: bool = True  # False: the law's interval includes 0, the LR was copied

    def describe(self) -> str:
        pm = f" ± {self.half_width:.2f}" if self.half_width is not None else " (no interval: 2 points)"
        if not self.applied:
            return (
                f"lr {self.lr_before:.4g} copied: {self.ratio:.3g}× {AXES[self.axis]}, but the law's exponent "
                f"{self.exponent:.2f}{pm} is not determined (its interval includes 0), so it is not applied"
            )
        return (
            f"lr {self.lr_before:.4g} → {self.lr_after:.4g}: {self.ratio:.3g}× {AXES[self.axis]} "
            f"at exponent {self.exponent:.2f}{pm} (LR* ∝ {self.axis}^exponent, fitted on the proxy)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": AXES[self.axis],
            "ratio": self.ratio,
            "exponent": self.exponent,
            "half_width": self.half_width,
            "lr_before": self.lr_before,
            "lr_after": self.lr_after,
            "extrapolation": self.extrapolation,
            "applied": self.applied,
        }


def _beyond(past: float, edge: float) -> str:
    """How far past the fitted range a target lies, said once: where the range's edge is the proxy's
    own value (1×) the factor past it is the target's multiple itself, not a second figure."""
    if edge == 1.0:
        return "past the fitted range by that factor"
    return f"{past:.3g}× past the range's edge ({edge:g}×)"


def apply_laws(
    laws: dict[str, Any] | None, lr: float, proxy_values: dict[str, float], target_values: dict[str, float]
) -> tuple[float, list[Adjustment], list[str]]:
    """The LR for a target, each fitted law applied for the axes it changes (multiplicatively: the
    laws are fitted one axis at a time, so combining them assumes they separate), and warnings for
    targets far outside the fitted range."""
    adjustments, warns = [], []
    for axis, doc in (laws or {}).items():
        if axis not in AXES or proxy_values[axis] == target_values[axis]:
            continue
        law = Law.from_dict(axis, doc)
        ratio = target_values[axis] / proxy_values[axis]
        lo, hi = law.fitted_range
        past = max(ratio / hi, lo / ratio, 1.0)
        if law.interval is not None and law.interval[0] <= 0.0 <= law.interval[1]:
            # the proxy did not determine the law: applying its noisy exponent can move the LR the
            # wrong way (bench/RESULTS.md §9), so the LR is copied, and the plan says so
            adjustments.append(
                Adjustment(axis, ratio, law.exponent, law.half_width, lr, lr, past, applied=False)
            )
            warns.append(
                f"{AXES[axis]}: the law's 95% interval [{law.interval[0]:.2f}, {law.interval[1]:.2f}] includes 0, "
                "so the proxy did not determine it and the LR is copied, not adjusted; more multiples or "
                "search.laws.seeds would determine it"
            )
            continue
        new_lr = lr * ratio**law.exponent
        adjustments.append(Adjustment(axis, ratio, law.exponent, law.half_width, lr, new_lr, past))
        if past > EXTRAPOLATION_WARN:
            warns.append(
                f"{AXES[axis]}: the law was fitted on {lo:g}–{hi:g}× the proxy's value and the target is at "
                f"{ratio:.3g}×, {_beyond(past, lo if ratio < lo else hi)} (more than {EXTRAPOLATION_WARN:g}×): "
                "fit it further "
                f"with `mutune laws RUN_DIR --{axis.replace('_', '-')} ...`"
            )
        lr = new_lr
    return lr, adjustments, warns


@dataclass
class LawPlan:
    """What the laws (and the timescale decay) do to one target's hyperparameters."""

    hparams: dict[str, float]  # the adjusted ones (lr, weight_decay); the rest unchanged
    adjustments: list[dict[str, Any]]  # what was applied, each with its ``description``
    warnings: list[str]  # extrapolation, and the approximate-transfer notes the laws did not cover
    covered: set[str]  # keys (train.steps, train.batch_size) a law accounts for
    skipped: bool = False  # --no-laws: there was something to apply and it was not

    def edit_warnings(self, warnings: list[str], run_dir: str) -> list[str]:
        """The plan's warnings: a covered key's approximate-transfer note dropped, the laws' own added."""
        kept = [w for w in warnings if w.split("=")[0] not in self.covered] + self.warnings
        if self.skipped:
            kept.append(
                "--no-laws: best.yaml's fitted laws are not applied; the hparams are copied unchanged"
            )
        return [w.replace("RUN_DIR", run_dir) for w in kept]


def plan_laws(
    laws: dict[str, Any] | None,
    hp: dict[str, float],
    proxy: Any,
    target: Any,
    *,
    timescale: bool | None = None,
    no_laws: bool = False,
) -> LawPlan:
    """The target's LR from the fitted laws for the axes (``steps``, ``batch_size``) it changes, and
    with ``timescale`` its weight decay keeping η·λ·steps at the proxy's; ``no_laws`` keeps both.
    ``proxy`` and ``target`` are train sections (``spec.train``) or mappings with those keys;
    ``timescale`` defaults to the target's ``weight_decay_timescale``."""
    proxy, target = (p if isinstance(p, dict) else _train_values(p) for p in (proxy, target))
    timescale = target.get("weight_decay_timescale", False) if timescale is None else timescale
    lr, adjustments, warns = apply_laws(laws, hp["lr"], proxy, target)
    out = [a.to_dict() | {"description": a.describe()} for a in adjustments]
    wd = hp.get("weight_decay", 0.0)
    if timescale and wd > 0 and (lr != hp["lr"] or target["steps"] != proxy["steps"]):
        wd = timescale_decay(wd, hp["lr"], proxy["steps"], lr, target["steps"])
        out.append(
            {
                "axis": "hparams.weight_decay",
                "weight_decay_before": hp["weight_decay"],
                "weight_decay_after": wd,
                "description": f"weight_decay {hp['weight_decay']:.4g} → {wd:.4g}: AdamW timescale "
                f"1/(lr·weight_decay·steps) kept at the proxy's (train.weight_decay_timescale)",
            }
        )
    covered = {AXES[a.axis] for a in adjustments}
    if no_laws:
        return LawPlan(dict(hp), [], [], set(), skipped=bool(out))
    return LawPlan({**hp, "lr": lr, "weight_decay": wd}, out, warns, covered)


def _train_values(train: Any) -> dict[str, Any]:
    return {k: getattr(train, k) for k in ("steps", "batch_size", "weight_decay_timescale")}


def timescale_decay(weight_decay: float, lr_proxy: float, steps_proxy: int, lr: float, steps: int) -> float:
    """λ that keeps AdamW's timescale as a fraction of training, 1/(η·λ·steps), at the proxy's value."""
    return weight_decay * (lr_proxy * steps_proxy) / (lr * steps)
