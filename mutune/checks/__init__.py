"""The coord check, with a verdict: does every activation keep its size, and its motion, as the model widens?

Under µP the typical size of every activation after any fixed number of training steps is
independent of width, and so is how far it has moved since init (TP5 §5, App. D.1); under SP the
output logits grow about linearly with width after one step of a large learning rate, and so
does everything the updates feed; a learning rate divided by m once too often leaves a layer
frozen as the model widens. mup's ``get_coord_data`` records |x_t| and draws it; here it is
recorded more widely and *decided*:

1. Build the model at widths ``base_width × {1, 2, 4, 8, 16}`` (any list), for a few seeds, with
   the spec's µP rules and multipliers, and train each for a few steps (t = 0 is the forward at
   init, t = k the forward after k updates) at a deliberately large LR (:func:`default_lr`), on one
   fixed batch per seed (the same at every width), without gradient clipping, schedule or dropout.
2. At every forward record (:mod:`.recorder`), at any nesting depth: the embedding output, every
   block, every parameter-holding module inside the blocks, the attention logits however they are
   computed, the output logits (before a log-softmax), each as mean |x_t|, mean |x_t − x_0| and,
   for parameter-holding modules, the change due to their own update.
3. Average over seeds, fit the slope of log size against log width per layer, measure and step,
   and pass when every slope is within its limit (:mod:`.verdict`, where the limits and the named
   exceptions are explained; docs/mup.md §3 has the measurements behind them).

A module that looks like attention (a class named ``*Attention*`` / ``*Attn*``, or one computing a
square product of two activations) whose scores were never seen (:mod:`.scores`) makes the verdict
**incomplete**: the check cannot see its scale, so it does not pass it. ``allow_unchecked=("attention",)``
(``--allow-unchecked attention``, ``model.allow_unchecked``) accepts that and passes on the rest;
the unchecked modules are still named.
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

from .. import arguments, data, models
from ..arguments import UNCHECKABLE as UNCHECKABLE
from ..config import HParams, Spec
from ..device import resolve_device, threads_for, use_threads
from ..files import atomic_write
from ..models import factory
from ..mup import optim
from ..mup.axes import AXES, Axis
from ..mup.optimizers import OPTIMIZERS
from ..mup.parametrizations import get as get_parametrization
from . import unit, verdict
from .axes import AXIS_SEEDS as AXIS_SEEDS
from .axes import DEPTH_SEEDS as DEPTH_SEEDS
from .axes import at_point as _at_width
from .axes import check_sizes, relative_names
from .axes import depth_relative as depth_relative
from .recorder import Kind, Recorder

THRESHOLD = verdict.LIMITS["x"]  # the |x| and |x - x0| limit; own updates have verdict.LIMITS["own"]
DEFAULT_MULTS = (1, 2, 4, 8, 16)
# the gate's widths: ×8, not ×4, since the smallest width alone drifts (finite width) and a 3-point fit follows it
GATE_MULTS = (1, 2, 4, 8)
TRANSIENT_STEPS = verdict.TRANSIENT_STEPS


@dataclass
class CoordCheckResult:
    """One parametrization's check: the raw records, the slopes, and the verdict."""

    parametrization: str
    passed: bool
    widths: list[int]
    seeds: int
    steps: int
    lr: float
    threshold: float  # the limit on |x| and |x - x0| slopes (own updates: limits["own"])
    records: pd.DataFrame  # parametrization, width, seed, t, layer, kind, l1, dl1, own
    slopes: pd.DataFrame  # parametrization, layer, kind, metric, t, slope, limit, status, reason, verdict
    failures: list[str]  # one line per failing (layer, measure, t), worst first
    problems: list[str] = field(default_factory=list)  # structural: a readout never called, ...
    warnings: list[str] = field(default_factory=list)  # what the check could not see
    limits: dict[str, float] = field(default_factory=lambda: dict(verdict.LIMITS))
    files: dict[str, Path] = field(default_factory=dict)
    control: CoordCheckResult | None = None  # the negative control's check (--compare sp)
    along: str = "width"  # the axis the slopes are fitted against (depth: --depths, at one width)
    sizes: list[int] = field(default_factory=list)  # its sizes, for an axis other than width
    unit_scales: pd.DataFrame | None = None  # u-µP: RMS of every activation and gradient at init
    unchecked: list[str] = field(default_factory=list)  # attention-like modules whose scores were not seen
    allowed: tuple[str, ...] = ()  # what the check was allowed to leave unchecked ("attention")

    @property
    def axis(self) -> str:
        """What the slopes are fitted against: ``width``, ``depth`` or ``experts``."""
        return self.along

    @property
    def points(self) -> list[int]:
        return self.sizes or self.widths

    @property
    def depths(self) -> list[int]:
        """The depths of a check across depth (empty otherwise)."""
        return self.sizes if self.along == "depth" else []

    @property
    def verdict(self) -> str:
        """``pass``; ``fail`` (a slope, a unit scale or the model's structure); ``incomplete``: nothing
        failed, but attention the check could not see was not allowed to stay unchecked."""
        if self.failures or self.problems:
            return "fail"
        return "incomplete" if self.unchecked and "attention" not in self.allowed else "pass"

    @property
    def largest_slope(self) -> float:
        """The largest |slope| the limits alone decided: not exempt rows, nor shrinking ones that
        would be exempt anyway."""
        g = verdict.gated(self.slopes)
        g = verdict.deviation(g).abs().dropna()
        return float(g.max()) if len(g) else float("nan")

    @property
    def margin(self) -> float:
        """The largest |slope| / limit among the gated rows: below 1 passes; how close it came."""
        g = verdict.gated(self.slopes).dropna(subset=["slope"])
        return float((verdict.deviation(g).abs() / g.limit).max()) if len(g) else float("nan")

    @property
    def closest(self) -> dict | None:
        """The gated row nearest its limit, named: layer, measure, step, slope, the slope expected of
        it (0 but where the parametrization expects one: u-µP's embedding updates), its limit around
        that, and the deviation's share of the limit (``margin``). What the gate and ``coord-check``
        report beside a pass."""
        g = verdict.gated(self.slopes).dropna(subset=["slope"])
        if not len(g):
            return None
        dev = verdict.deviation(g).abs() / g.limit
        r = g.loc[dev.idxmax()]
        expected = float(r.expected) if "expected" in g and r.expected == r.expected else 0.0
        return {
            "layer": r.layer,
            "measure": "scale × head dim" if r.kind == "attn_scale" else verdict.MEASURES[r.metric],
            "t": int(r.t),
            "slope": float(r.slope),
            "expected": expected,
            "limit": float(r.limit),
            "share": float(dev.max()),
        }

    def message(self) -> str:
        """One line: the verdict and, for a failure, the offending layer(s); then any warnings."""
        name = get_parametrization(self.parametrization).label
        warn = "".join(f"; warning: {w}" for w in self.warnings)
        modules = ", ".join(f"'{a}'" for a in self.unchecked)
        if self.verdict == "incomplete":
            return (
                f"coord check {name}: INCOMPLETE: the attention scores of {modules} were never seen (no "
                "product of two activations normalised across its last axis, no scaled_dot_product_attention "
                "call), so their scale is unchecked; every slope the check could see is within its limit (the "
                f"closest at {self.margin:.0%}). Pass --allow-unchecked attention (or set model.allow_unchecked: "
                "[attention]) to accept that"
            )
        if self.unchecked:
            warn = f"; attention of {modules} unchecked (allowed)" + "".join(
                f"; warning: {w}" for w in self.warnings if not w.startswith("attention")
            )
        if self.passed:
            unit_note = ""
            if self.unit_scales is not None and len(self.unit_scales):
                u = self.unit_scales
                unit_note = (
                    f"; unit scale at init: activations {u.x_rms.min():.2g}..{u.x_rms.max():.2g}, gradients "
                    f"{u.grad_rms.min():.2g}..{u.grad_rms.max():.2g} RMS (within ×{get_parametrization(self.parametrization).unit_rms:g} "
                    "of 1; the logits exempt)"
                )
            c = self.closest
            nearest = (
                f"; the closest, {c['layer']} {c['measure']} at t={c['t']}, {c['slope']:+.2f} against "
                f"{verdict.around(c['expected'])}±{c['limit']:g}: {c['share']:.0%} of its limit"
                if c
                else ""
            )
            return (
                f"coord check {name}: pass (every slope within its limit: |x| and |x-x0| ±{self.limits['x']:g}, "
                f"own updates ±{self.limits['own']:g}{nearest}; {arguments.sizes_arg(AXES[self.axis])} "
                f"{self.points[0]}..{self.points[-1]}"
                f"{unit_note}){warn}"
            )
        reasons = self.problems + self.failures[:3]
        more = f" (+{len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        return f"coord check {name}: FAIL: " + "; ".join(reasons) + more + warn


# ---------------------------------------------------------------------------------------------
# Recording


def _readouts(model: nn.Module, spec: Spec) -> tuple[str, ...]:
    """The readout modules to leave out of the records: those the model says it instrumented
    (a factory model), else the family's named readouts."""
    return tuple(getattr(model, "_mutune_readouts", ())) or models.readout_names(spec)


def _run(
    spec: Spec,
    hp: HParams,
    seed: int,
    steps: int,
    batch: tuple[torch.Tensor, torch.Tensor],
    leaves: bool,
) -> tuple[list[dict[str, tuple[float, float, float]]], dict[str, Kind], list[str], list[str]]:
    """Train one model ``steps - 1`` updates; per forward ``{layer: (|x_t|, |x_t - x_0|)}``, the
    layer kinds, structural problems, and attention modules whose logits were not found."""
    device = batch[0].device
    model, infos = models.create(spec, hp, data.vocab_size(spec.data), device, seed=seed)
    t = spec.train
    groups = models.param_groups(spec, model, infos, hp)
    opt = optim.make_optimizer(groups, hp, t.optimizer)
    x, y = batch
    rec = Recorder(model, _readouts(model, spec), out_features=data.vocab_size(spec.data), leaves=leaves)
    rows: list[dict[str, tuple[float, float, float]]] = []
    problems: list[str] = []
    try:
        with rec.intercept():
            for step in range(steps):
                logits, loss = model(x, y)
                rec.add_logits(logits)
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
    return rows, dict(rec.kinds), problems, rec.missing_attention()


def _batches(
    spec: Spec, seeds: int, seq_len: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One fixed batch per seed, the same at every width."""
    device = resolve_device(spec.train.device)
    corpus = data.load(spec.data, min_len=seq_len + 1)
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng([spec.seed, seed])
        out.append(data.get_batch(corpus.train, batch_size, seq_len, rng, device))
    return out


def unit_records(
    spec: Spec, hp: HParams, widths: list[int], seeds: int, seq_len: int, batch_size: int
) -> pd.DataFrame:
    """The unit-scale check's rows (:mod:`.unit`): RMS of every activation and its gradient at init."""
    batches = _batches(spec, seeds, seq_len, batch_size)
    rows = []
    for width in widths:
        wspec = _at_width(spec, width, seq_len, batch_size)
        for seed in range(seeds):
            rows += unit.unit_scales(wspec, hp, width, spec.seed * 1000 + seed, batches[seed])
    df = pd.DataFrame(rows)
    df.insert(0, "parametrization", spec.model.parametrization)
    return df


def records(
    spec: Spec,
    hp: HParams,
    widths: list[int],
    seeds: int,
    steps: int,
    seq_len: int,
    batch_size: int,
    leaves: bool = True,
    along: Axis | None = None,
    sizes: list[int] | None = None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per width (and size along ``along``: depth, experts), seed, step and layer: mean |x_t|
    (``l1``) and mean |x_t - x_0| (``dl1``); with the structural problems and the attention modules
    whose logits were not found. Across another axis, layers are named by :func:`relative_names`
    (blocks by relative depth, a mixture's experts as one)."""
    batches = _batches(spec, seeds, seq_len, batch_size)
    rows, problems, missing = [], [], []
    vocab = data.vocab_size(spec.data)
    for width, size in [(w, n) for w in widths for n in sizes or [None]]:
        wspec = _at_width(spec, width, seq_len, batch_size, along, size)
        rename = (lambda layer: layer) if along is None else relative_names(wspec, hp, vocab, along, size)
        for seed in range(seeds):
            per_t, kinds, probs, miss = _run(wspec, hp, spec.seed * 1000 + seed, steps, batches[seed], leaves)
            problems += [p for p in probs if p not in problems]
            missing += [a for a in miss if a not in missing]
            for t, values in enumerate(per_t):
                for layer, (l1, dl1, own) in values.items():
                    name = rename(layer)
                    if name is None:
                        continue
                    rows.append(
                        {
                            "width": width,
                            "depth": wspec.model.depth,
                            **({along.name: size} if along is not None else {}),
                            "seed": seed,
                            "t": t,
                            "layer": name,
                            "kind": kinds.get(layer, "other"),
                            "l1": l1,
                            "dl1": dl1,
                            "own": own,
                        }
                    )
    df = pd.DataFrame(rows)
    df.insert(0, "parametrization", spec.model.parametrization)
    return df, problems, missing


def _check_one(
    spec: Spec,
    hp: HParams,
    widths: list[int],
    seeds: int,
    steps: int,
    lr: float,
    limits: dict[str, float],
    seq_len: int,
    batch_size: int,
    along: Axis | None = None,
    sizes: list[int] | None = None,
    allowed: tuple[str, ...] = (),
) -> CoordCheckResult:
    hp = dataclasses.replace(hp, lr=float(lr))
    df, problems, missing = records(
        spec, hp, widths, seeds, steps, seq_len, batch_size, along=along, sizes=sizes
    )
    expected = models.parametrization(spec).expected_slopes
    axis = along.name if along is not None else "width"
    slopes = verdict.slopes(df, limits, axis=axis, expected=expected)
    warnings = [
        f"attention scores of '{a}' not found (no product of two activations normalised across its "
        "last axis, no scaled_dot_product_attention call inside it), so its scaling is not checked"
        for a in missing
    ]
    if missing:
        rows = [
            {
                "layer": f"{a}.logits",
                "kind": "attn_logits",
                "metric": "x",
                "t": 0,
                "slope": float("nan"),
                "limit": limits["x"],
                "status": "not_found",
                "reason": w,
            }
            for a, w in zip(missing, warnings, strict=True)
        ]
        slopes = pd.concat([slopes, pd.DataFrame(rows)], ignore_index=True)
    failures = verdict.failures(slopes)
    scales, tolerance = None, models.parametrization(spec).unit_rms
    if tolerance is not None and along is None:  # the parametrization promises unit scale at init (u-µP)
        scales = unit_records(spec, hp, widths, seeds, seq_len, batch_size)
        failures += unit.verdict(scales, tolerance)
    result = CoordCheckResult(
        parametrization=spec.model.parametrization,
        passed=False,
        widths=list(widths),
        seeds=seeds,
        steps=steps,
        lr=lr,
        threshold=limits["x"],
        records=df,
        slopes=slopes,
        failures=failures,
        problems=problems,
        warnings=warnings,
        limits=dict(limits),
        along=axis,
        sizes=list(sizes or []),
        unit_scales=scales,
        unchecked=list(missing),
        allowed=tuple(allowed),
    )
    result.passed = result.verdict == "pass"
    slopes.insert(0, "parametrization", spec.model.parametrization)
    slopes["verdict"] = result.verdict
    return result


def default_lr(spec: Spec) -> float:
    """The optimizer's own check LR where it has one (AdamW: 0.01, the LR of nanoGPT-mup's coord
    checks); otherwise (SGD, whose LR scale depends on the model) the middle (geometric mean) of the
    searched LR range, else η.

    Large enough that SP's activations blow up within a step or two, not so large that µP leaves
    its finite-width noise band at base widths as small as 32: on the built-in GPT of width
    32..128, Adam at 0.003 leaves the init part of the logits (∝ width^-1/2) dominant until t = 3,
    at 0.03 or 0.1 the blocks already drift by slopes of 0.3-0.4 from finite-width effects alone.
    """
    own = models.parametrization(spec).check_lr  # a parametrization whose LR scale is its own (u-µP)
    fixed = own if own is not None else OPTIMIZERS[spec.train.optimizer].check_lr
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
    threshold: float | None = None,
    own_threshold: float | None = None,
    seq_len: int = 16,
    batch_size: int = 2,
    compare: str | None = None,
    out_dir: str | Path | None = None,
    prefix: str = "coord_check",
    plot: bool = True,
    depths: list[int] | None = None,
    allow_unchecked: tuple[str, ...] | list[str] = (),
    along: str | None = None,
    sizes: list[int] | None = None,
) -> CoordCheckResult:
    """Run the coord check of ``spec``'s model; write CSVs (and a PNG) to ``out_dir`` when given.

    ``allow_unchecked=("attention",)`` (with the spec's ``model.allow_unchecked``) lets attention the
    check cannot see stay unchecked: the verdict is then ``pass`` on the rest, not ``incomplete``.

    ``along`` and ``sizes`` check across another axis instead, at the base width: the same measures,
    slopes against the log of the axis's size, with its rules relative to the spec's base there (its
    own size when unset). ``depths`` is ``along="depth"``: CompleteP (``model.depth_alpha = 1``) keeps
    every slope flat, no depth scaling does not. ``along="experts"``: a mixture's experts, compared
    as one (their mean), flat under the experts rules, not where an optimizer's update shrinks with
    the tokens each expert sees (SGD without them).

    ``widths`` defaults to ``base_width × mults``; ``compare="sp"`` also checks the SP twin (a
    negative control, expected to fail) and attaches it as ``result.control``. ``threshold`` and
    ``own_threshold`` replace the limits on |x|, |x - x0| and on own-update slopes
    (:data:`verdict.LIMITS`).
    """
    hp = hp or spec.hparams
    use_threads(threads_for(spec.train.threads))
    # the arguments, checked as the command line checks them before loading torch
    widths, along, sizes = arguments.coord_check(
        spec,
        compare=compare,
        seeds=seeds,
        steps=steps,
        widths=widths,
        mults=mults,
        depths=depths,
        allow_unchecked=allow_unchecked,
        along=along,
        sizes=sizes,
    )
    axis = AXES[along] if along is not None else None
    if axis is not None:  # and where the model cannot apply the axis
        sizes = check_sizes(spec, axis, sizes)
    allowed = tuple(dict.fromkeys([*allow_unchecked, *getattr(spec.model, "allow_unchecked", ())]))
    # a shorter context is the same model for a GPT (position rows and attention length are finite
    # dims); for the MLP it is the input size, so each family says which context the check may use
    seq_len = models.family(spec).coord_seq_len(spec, seq_len)
    lr = default_lr(spec) if lr is None else lr
    args = dict(
        widths=widths,
        seeds=seeds,
        steps=steps,
        lr=lr,
        limits={
            **verdict.LIMITS,
            **({"x": threshold, "dx": threshold} if threshold is not None else {}),
            **({"own": own_threshold} if own_threshold is not None else {}),
        },
        seq_len=seq_len,
        batch_size=batch_size,
        along=axis,
        sizes=sizes,
        allowed=allowed,
    )
    result = _check_one(spec, hp, **args)
    if compare is not None:
        result.control = _check_one(spec.edit({"model.parametrization": compare}), hp, **args)
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
    scales = [r.unit_scales for r in runs if r.unit_scales is not None]
    if scales:  # u-µP: RMS of every activation and gradient at init
        paths["unit"] = out_dir / f"{prefix}_unit.csv"
        table = pd.concat(scales, ignore_index=True)
        atomic_write(paths["unit"], lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    atomic_write(paths["slopes"], lambda p: slopes.to_csv(p, index=False, float_format="%.4f"))
    if plot:
        paths["png"] = out_dir / f"{prefix}.png"
        from .figure import plot_png

        plot_png(runs, paths["png"])
    result.files = paths
