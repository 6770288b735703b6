"""The coord check, with a verdict: does every activation keep its size as the model widens?

Under µP the typical size of every activation, after any fixed number of training steps, is
independent of width (TP5 §5, App. D.1); under SP the output logits grow about linearly with width
after one step of a large learning rate, and so does everything the updates feed. mup's
``get_coord_data`` records this and draws it; here it is also *decided*:

1. Build the model at widths ``base_width × {1, 2, 4, 8, 16}`` (any list), for a few seeds, with
   the spec's µP rules and multipliers, and train each for a few steps (t = 0 is the forward at
   init, t = k the forward after k updates) at a deliberately large LR (:func:`default_lr`), on one
   fixed batch per seed (the same at every width), without gradient clipping or schedule.
2. At every forward record mean |x| of: the embedding output (the input of the first block),
   every top-level block's output, the attention logits q·kᵀ·scale of every attention module (SDPA
   computes them out of sight, so its call is intercepted and the product recomputed from its q, k
   and scale), every other top-level module's output, and the output logits.
3. Average over seeds, fit the slope of log(mean |x|) against log(width) per layer and step, and
   pass when every |slope| ≤ :data:`THRESHOLD`.

Known exceptions, shown in the slopes CSV with status ``exempt`` and a reason, never hidden:

- for t < 2, output logits and attention logits may *shrink* (µP's constant-std readout times
  α_out/m, and 1/d attention on uncorrelated q, k, both give width^-½ at init, TP5 App. D.1, and
  after one update that part still weighs at small widths); growth always fails.
- a layer that is exactly 0 at every width (a zero-initialised readout at t = 0) has no slope.

Why 0.25: from width 32 to 1024, µP's slopes stay within about ±0.2 (finite-width noise; measured on
the built-in GPT and MLP and on the models in tests/factory_models.py), while each thing µP fixes
moves a slope by 0.5 or more: SP's logits and blocks grow like width or faster (slopes 0.6 to 1.8 on
the quickstart), a readout without 1/m leaves +0.5, 1/√d attention with a growing head dim gives +0.5
once q and k align (+0.3 after 4 steps at tiny widths). docs/mup.md has the measured tables.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data, models, optim
from ..config import HParams, Spec, SpecError
from ..device import resolve_device
from ..files import atomic_write
from ..models import factory
from ..registry import OPTIMIZERS
from .recorder import Kind, Recorder

THRESHOLD = 0.25
DEFAULT_MULTS = (1, 2, 4, 8, 16)
# the gate's widths: ×8, not ×4, since the smallest width alone drifts (finite width) and a 3-point fit follows it
GATE_MULTS = (1, 2, 4, 8)
TRANSIENT = ("logits", "attn_logits")  # kinds allowed to shrink while t < TRANSIENT_STEPS
TRANSIENT_STEPS = 2


@dataclass
class CoordCheckResult:
    """One parametrization's check: the raw records, the slopes, and the verdict."""

    parametrization: str
    passed: bool
    widths: list[int]
    seeds: int
    steps: int
    lr: float
    threshold: float
    records: pd.DataFrame  # parametrization, width, seed, t, layer, kind, l1
    slopes: pd.DataFrame  # parametrization, layer, kind, t, slope, status, reason, verdict
    failures: list[str]  # one line per failing (layer, t), worst first
    problems: list[str] = field(default_factory=list)  # structural: a readout never called, ...
    files: dict[str, Path] = field(default_factory=dict)
    control: CoordCheckResult | None = None  # the SP twin, with --compare sp

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def largest_slope(self) -> float:
        """The largest |slope| the threshold alone decided: not exempt rows, nor the shrinking
        logits of the first steps that would be exempt anyway (the margin that matters)."""
        s = self.slopes
        transient = (s.t < TRANSIENT_STEPS) & s.kind.isin(TRANSIENT) & (s.slope < 0)
        gated = s[(s.status != "exempt") & ~transient].slope.abs()
        return float(gated.max()) if len(gated) else float("nan")

    def message(self) -> str:
        """One line: the verdict and, for a failure, the offending layer(s)."""
        name = "µP" if self.parametrization == "mup" else self.parametrization.upper()
        if self.passed:
            return (
                f"coord check {name}: pass (every |slope| <= {self.threshold}, largest {self.largest_slope:.2f}, "
                f"widths {self.widths[0]}..{self.widths[-1]})"
            )
        reasons = self.problems + self.failures[:3]
        more = f" (+{len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        return f"coord check {name}: FAIL: " + "; ".join(reasons) + more


# ---------------------------------------------------------------------------------------------
# Recording


def _at_width(spec: Spec, width: int, seq_len: int, batch_size: int) -> Spec:
    return spec.edit({"model.width": width, "model.seq_len": seq_len, "train.batch_size": batch_size})


def _readouts(model: nn.Module, spec: Spec) -> tuple[str, ...]:
    """The readout modules to leave out of the records: those the model says it instrumented
    (a factory model), else the family's named readouts."""
    return tuple(getattr(model, "_mutune_readouts", ())) or models.readout_names(spec)


def _run(
    spec: Spec, hp: HParams, width: int, seed: int, steps: int, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[list[dict[str, float]], dict[str, Kind], list[str]]:
    """Train one model ``steps - 1`` updates; the per-forward records, the layer kinds, problems."""
    device = batch[0].device
    model, infos = models.create(spec, hp, data.vocab_size(spec.data), device, seed=seed)
    t = spec.train
    groups = models.param_groups(spec, model, infos, hp)
    opt = optim.make_optimizer(groups, hp, t.optimizer)
    rec = Recorder(model, _readouts(model, spec))
    rows: list[dict[str, float]] = []
    problems: list[str] = []
    x, y = batch
    try:
        with rec.attention():
            for step in range(steps):
                logits, loss = model(x, y)
                rec.add("logits", "logits", logits)
                rows.append(rec.take())
                if step == 0:
                    problems = [
                        f"readout '{name}' was never called in forward (its weight used directly?), so "
                        "α_out/m was not applied"
                        for name in factory.uncalled_readouts(model)
                    ]
                if step == steps - 1:
                    break
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
    finally:
        rec.remove()
    kinds = {k: v for k, v in rec.kinds.items() if v != "skip"}
    return rows, kinds, problems


def _slopes(records: pd.DataFrame, threshold: float, zero_tol: float = 0.0) -> pd.DataFrame:
    rows = []
    for (layer, t), g in records.groupby(["layer", "t"], sort=False):
        kind = g.kind.iloc[0]
        mean = g.groupby("width").l1.mean().sort_index()
        widths, values = mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)
        slope, status, reason = float("nan"), "ok", ""
        if not np.all(np.isfinite(values)):
            bad = int(widths[~np.isfinite(values)][0])
            status, reason = "fail", f"non-finite at width {bad} (diverged: lower the check's LR?)"
        elif np.all(values <= zero_tol):
            status, reason = "exempt", "exactly 0 at every width (zero-initialised), no slope"
        elif np.any(values <= zero_tol):
            status, reason = "fail", "0 at some widths only"
        else:
            slope = float(np.polyfit(np.log(widths), np.log(values), 1)[0])
            if abs(slope) <= threshold:
                status = "ok"
            elif t < TRANSIENT_STEPS and kind in TRANSIENT and slope < 0:
                status = "exempt"
                reason = (
                    "at init µP logits shrink like width^-1/2 (readout std constant, times α_out/m)"
                    if kind == "logits"
                    else "at init q and k are uncorrelated: 1/d attention shrinks like d_head^-1/2"
                ) + (
                    " (TP5 App. D.1), and at t=1 that part still weighs at small widths: "
                    f"allowed to shrink for t < {TRANSIENT_STEPS}, never to grow"
                )
            else:
                status = "fail"
                reason = f"|slope| {abs(slope):.2f} > {threshold}"
        rows.append(
            {"layer": layer, "kind": kind, "t": int(t), "slope": slope, "status": status, "reason": reason}
        )
    return pd.DataFrame(rows)


def _check_one(
    spec: Spec,
    hp: HParams,
    widths: list[int],
    seeds: int,
    steps: int,
    lr: float,
    threshold: float,
    seq_len: int,
    batch_size: int,
) -> CoordCheckResult:
    hp = dataclasses.replace(hp, lr=float(lr))
    device = resolve_device(spec.train.device)
    corpus = data.load(spec.data, min_len=seq_len + 1)
    batches = []
    for seed in range(seeds):
        rng = np.random.default_rng([spec.seed, seed])
        batches.append(data.get_batch(corpus.train, batch_size, seq_len, rng, device))
    records, kinds, problems = [], {}, []
    for width in widths:
        wspec = _at_width(spec, width, seq_len, batch_size)
        for seed in range(seeds):
            rows, k, probs = _run(wspec, hp, width, spec.seed * 1000 + seed, steps, batches[seed])
            kinds.update(k)
            problems += [p for p in probs if p not in problems]
            for t, values in enumerate(rows):
                for layer, v in values.items():
                    records.append(
                        {
                            "width": width,
                            "seed": seed,
                            "t": t,
                            "layer": layer,
                            "kind": kinds.get(layer, "other"),
                            "l1": v,
                        }
                    )
    df = pd.DataFrame(records)
    df.insert(0, "parametrization", spec.model.parametrization)
    slopes = _slopes(df, threshold)
    order = {layer: i for i, layer in enumerate(dict.fromkeys(df.layer))}
    slopes = slopes.sort_values(["t", "layer"], key=lambda s: s.map(order) if s.name == "layer" else s)
    fails = slopes[slopes.status == "fail"].copy()
    fails["size"] = fails.slope.abs().fillna(np.inf)
    fails = fails.sort_values("size", ascending=False)
    failures = [
        f"{r.layer} at t={r.t}: "
        + (f"slope {r.slope:+.2f} (|slope| > {threshold})" if math.isfinite(r.slope) else r.reason)
        for r in fails.itertuples()
    ]
    passed = not failures and not problems
    slopes.insert(0, "parametrization", spec.model.parametrization)
    slopes["verdict"] = "pass" if passed else "fail"
    slopes["threshold"] = threshold
    return CoordCheckResult(
        parametrization=spec.model.parametrization,
        passed=passed,
        widths=list(widths),
        seeds=seeds,
        steps=steps,
        lr=lr,
        threshold=threshold,
        records=df,
        slopes=slopes.reset_index(drop=True),
        failures=failures,
        problems=problems,
    )


def default_lr(spec: Spec) -> float:
    """The optimizer's own check LR where it has one (AdamW: 0.01, the LR of nanoGPT-mup's coord
    checks); otherwise (SGD, whose LR scale depends on the model) the middle (geometric mean) of the
    searched LR range, else η.

    Large enough that SP's activations blow up within a step or two, not so large that µP leaves
    its finite-width noise band at base widths as small as 32: on the built-in GPT of width
    32..128, Adam at 0.003 leaves the init part of the logits (∝ width^-1/2) dominant until t = 3,
    at 0.03 or 0.1 the blocks already drift by slopes of 0.3-0.4 from finite-width effects alone.
    """
    fixed = OPTIMIZERS[spec.train.optimizer].check_lr
    if fixed is not None:
        return fixed
    space = spec.search.space.get("lr")
    if space is not None and space.type in ("log_uniform", "uniform") and space.low and space.high:
        return float(math.sqrt(space.low * space.high))
    return spec.hparams.lr


def coord_check(
    spec: Spec,
    *,
    hp: HParams | None = None,
    widths: list[int] | None = None,
    mults: tuple[int, ...] = DEFAULT_MULTS,
    seeds: int = 3,
    steps: int = 5,
    lr: float | None = None,
    threshold: float = THRESHOLD,
    seq_len: int = 16,
    batch_size: int = 2,
    compare: str | None = None,
    out_dir: str | Path | None = None,
    prefix: str = "coord_check",
    plot: bool = True,
) -> CoordCheckResult:
    """Run the coord check of ``spec``'s model; write CSVs (and a PNG) to ``out_dir`` when given.

    ``widths`` defaults to ``base_width × mults``; ``compare="sp"`` also checks the SP twin (the
    negative control, expected to fail) and attaches it as ``result.control``.
    """
    hp = hp or spec.hparams
    widths = sorted(set(widths or [spec.model.base_width * k for k in mults]))
    if len(widths) < 2:
        raise SpecError("--widths", "a slope needs at least two widths")
    if steps < 2:
        raise SpecError("--steps", "needs at least 2 steps (t = 0 is the model at init)")
    if seeds < 1:
        raise SpecError("--seeds", f"must be >= 1, got {seeds}")
    if compare not in (None, "sp"):
        raise SpecError("--compare", f"only 'sp' is supported, got {compare!r}")
    if compare == "sp" and spec.model.parametrization == "sp":
        raise SpecError("--compare", "the spec is already SP; compare a µP spec with its SP twin")
    # a shorter context is the same model for a GPT (position rows and attention length are finite
    # dims); for the MLP it is the input size, so each family says which context the check may use
    seq_len = models.family(spec).coord_seq_len(spec, seq_len)
    lr = default_lr(spec) if lr is None else lr
    args = dict(
        widths=widths,
        seeds=seeds,
        steps=steps,
        lr=lr,
        threshold=threshold,
        seq_len=seq_len,
        batch_size=batch_size,
    )
    result = _check_one(spec, hp, **args)
    if compare == "sp":
        sp = spec.edit({"model.parametrization": "sp"})
        result.control = _check_one(sp, hp, **args)
    if out_dir is not None:
        write(result, Path(out_dir), prefix, plot)
    return result


# ---------------------------------------------------------------------------------------------
# Outputs


def write(result: CoordCheckResult, out_dir: Path, prefix: str = "coord_check", plot: bool = True) -> None:
    """``<prefix>.csv`` (one row per width, seed, step, layer), ``<prefix>_slopes.csv`` (slope, status,
    reason and verdict per layer and step) and ``<prefix>.png``; both parametrizations with a control."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [result] + ([result.control] if result.control is not None else [])
    records = pd.concat([r.records for r in runs], ignore_index=True)
    slopes = pd.concat([r.slopes for r in runs], ignore_index=True)
    paths = {"records": out_dir / f"{prefix}.csv", "slopes": out_dir / f"{prefix}_slopes.csv"}
    atomic_write(paths["records"], lambda p: records.to_csv(p, index=False))
    atomic_write(paths["slopes"], lambda p: slopes.to_csv(p, index=False, float_format="%.4f"))
    if plot:
        paths["png"] = out_dir / f"{prefix}.png"
        from .figure import plot_png

        plot_png(runs, paths["png"])
    result.files = paths
