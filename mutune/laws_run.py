"""Fitting the LR laws on the proxy: a short LR line search around the winner at each multiple.

After the search (``search.laws``) or later (``mutune laws RUN``): at each listed multiple of
``train.steps`` / ``train.batch_size``, the winning hyperparameters are trained at LRs
``lr·2^(k·lr_step)`` around the winner's, the grid extended by one point at a time while its argmin
sits at an edge; LR* comes from :func:`mutune.laws.lr_optimum` and the law from
:func:`mutune.laws.fit_law`. Every finished run is appended to ``<run_dir>/laws/runs.csv`` (atomic
rewrite), keyed by what it trained, so a killed fit loses only the run in progress and a re-run or
an extended fit trains only the new points. The laws go to ``laws/laws.yaml`` and into best.yaml
(``laws:``), their compute into ``provenance.search_flops`` (the plan's tuning cost).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from .config import Best, HParams, RunDir, Spec, SpecError
from .config.meaning import LAW_POINT_EFFECTS, keys_where, select
from .errors import SearchFailed, arg
from .events import SILENT, Events
from .files import atomic_write
from .laws import AXES, Law, fit_law, lr_optimum, timescale_decay

COLUMNS = ("key", "axis", "multiple", "steps", "batch_size", "lr", "weight_decay", "seed", "loss")
COLUMNS += ("flops", "separate_flops", "seconds")
MAX_EXTRA = 4  # points a line search may add beyond its initial grid, to bring the argmin inside


def axis_spec(spec: Spec, axis: str, multiple: float) -> Spec:
    """The proxy at ``multiple`` × its steps or batch size (validated; errors name search.laws)."""
    key = AXES[axis]
    value = getattr(spec.train, axis) * multiple
    if abs(value - round(value)) > 1e-9 * max(1.0, value) or round(value) < 1:
        raise SpecError(
            f"search.laws.{axis}",
            f"{multiple:g} × {key}={getattr(spec.train, axis)} is {value:g}, not a whole number >= 1",
        )
    try:
        return spec.edit({key: int(round(value))})
    except SpecError as e:
        raise SpecError(f"search.laws.{axis}", f"at {multiple:g}×: {e.key}: {e.message}") from None


def point_key(spec: Spec, hp: HParams, seed: int) -> str:
    """A line-search run's cache key: what decides its loss (:data:`mutune.config.meaning.LAW_POINT_EFFECTS`)."""
    d = select(spec.to_dict(), keys_where(Spec, LAW_POINT_EFFECTS))
    what = {k: d[k] for k in ("model", "data", "train")} | {"seed": seed, "hparams": asdict(hp)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runs:
    """``laws/runs.csv``: every finished line-search run, looked up by what it trained."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            with path.open() as f:
                for row in csv.DictReader(f):
                    self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def write(p: Path) -> None:
            with p.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(self.rows.values())

        atomic_write(self.path, write)


def line_search(
    loss_at: Callable[[float], float], center: float, step: float, points: int, max_extra: int = MAX_EXTRA
) -> tuple[list[float], list[float]]:
    """Losses at ``center·2^(k·step)`` for ``points`` values of k around 0, extended one point at a
    time on the side of the argmin while it sits at the grid's edge (or, all diverged, downwards)."""
    lo = -(points // 2)
    ks = list(range(lo, lo + points))
    losses = {k: loss_at(center * 2.0 ** (k * step)) for k in ks}
    for _ in range(max_extra):
        ordered = sorted(losses)
        finite = [k for k in ordered if math.isfinite(losses[k])]
        if not finite:
            k = ordered[0] - 1
        else:
            best = min(finite, key=lambda k: losses[k])
            if best not in (ordered[0], ordered[-1]):
                break
            k = best - 1 if best == ordered[0] else best + 1
        losses[k] = loss_at(center * 2.0 ** (k * step))
    ordered = sorted(losses)
    return [center * 2.0 ** (k * step) for k in ordered], [losses[k] for k in ordered]


def seeds_of(spec: Spec) -> int:
    """``search.laws.seeds``, by default 2 where branches make each LR's horizons one run (WSD), else 1."""
    return spec.search.laws.seeds or (2 if spec.train.schedule == "wsd" else 1)


def branched(spec: Spec, axis: str) -> bool:
    """Whether the law's points along ``axis`` come from one run's cooldown branches: the horizon
    axis of a WSD run (a shorter WSD run is a branch of the longest one, bit for bit)."""
    return axis == "steps" and spec.train.schedule == "wsd"


def _loss_fn(
    spec: Spec,
    point: Spec,
    hp: HParams,
    axis: str,
    multiple: float,
    runs: Runs,
    events: Events,
    used: set,
    multiples: list[float],
):
    """The loss at an LR for one multiple: the mean over seeds, each from runs.csv or trained now;
    the keys of the runs it read go into ``used`` (the law's cost). On a WSD run's horizon axis a
    point not yet trained is trained as the longest multiple with branches at the others, and every
    multiple's row is recorded from that one run."""
    from .train import train

    n_seeds = seeds_of(spec)

    def loss_at(lr: float) -> float:
        wd = hp.weight_decay
        if spec.train.weight_decay_timescale and wd > 0:  # the same τ the transfer would keep
            wd = timescale_decay(wd, hp.lr, spec.train.steps, lr, point.train.steps)
        php = replace(hp, lr=lr, weight_decay=wd)
        total = 0.0
        for s in range(n_seeds):
            seed = spec.seed + s
            pspec = point.edit({"seed": seed})
            key = point_key(pspec, php, seed)
            row = runs.get(key)
            used.add(key)
            if row is None and branched(spec, axis):
                _train_branched(spec, php, axis, multiples, seed, runs, events)
                row = runs.get(key)
            if row is None:
                r = train(pspec, php)
                loss = math.inf if r.diverged or not math.isfinite(r.final_val_loss) else r.final_val_loss
                row = {"key": key, "axis": axis, "multiple": multiple, "steps": pspec.train.steps}
                row.update(batch_size=pspec.train.batch_size, lr=lr, weight_decay=wd, seed=seed, loss=loss)
                row.update(flops=r.flops, separate_flops=r.flops, seconds=r.seconds)
                runs.add(row)
                events.law_point(
                    f"laws: {AXES[axis]}={getattr(pspec.train, axis)} ({multiple:g}×) lr {lr:.4g} "
                    f"seed {seed}: loss {loss:.4f}"
                )
            total += float(row["loss"])
        return total / n_seeds

    return loss_at


def _train_branched(
    spec: Spec, hp: HParams, axis: str, multiples: list[float], seed: int, runs: Runs, events: Events
) -> None:
    """One WSD run at the longest multiple, branches at the others: a row per multiple in runs.csv,
    keyed as the separate run it equals. The run's compute is on the longest multiple's row; each row
    also records what its separate run would have cost (the saving, in the law)."""
    from . import flops
    from .train import train

    top = max(multiples)
    longest = axis_spec(spec, axis, top).edit({"seed": seed})
    fractions = sorted({m / top for m in multiples})
    r = train(longest.edit({"train.branches": fractions}), hp)
    by_steps = {b["steps"]: b for b in r.branches}
    for m in multiples:
        point = axis_spec(spec, axis, m).edit({"seed": seed})
        b = by_steps.get(point.train.steps)  # missing: the run diverged before that horizon
        loss = float(b["val_loss"]) if b is not None else math.inf
        loss = loss if math.isfinite(loss) else math.inf
        row = {"key": point_key(point, hp, seed), "axis": axis, "multiple": m, "steps": point.train.steps}
        row.update(
            batch_size=point.train.batch_size, lr=hp.lr, weight_decay=hp.weight_decay, seed=seed, loss=loss
        )
        separate = flops.cost(point, hp=hp).total_flops
        row.update(
            flops=r.flops if m == top else 0.0,
            separate_flops=separate,
            seconds=r.seconds if m == top else 0.0,
        )
        runs.add(row)
    events.law_point(
        f"laws: {AXES[axis]}={longest.train.steps} with branches at {', '.join(f'{m:g}×' for m in multiples)} "
        f"lr {hp.lr:.4g} seed {seed}: losses "
        + ", ".join(f"{by_steps[s]['val_loss']:.4f}" for s in sorted(by_steps))
    )


def fit_axis(spec: Spec, hp: HParams, axis: str, multiples: list[float], runs: Runs, events: Events) -> Law:
    """The law along one axis: a line search at each multiple, then the fit."""
    ls = spec.search.laws
    stars, points, keys = [], [], set()
    for m in multiples:
        point = axis_spec(spec, axis, m)
        lrs, losses = line_search(
            _loss_fn(spec, point, hp, axis, m, runs, events, keys, multiples), hp.lr, ls.lr_step, ls.lr_points
        )
        opt = lr_optimum(lrs, losses)
        if opt is None:
            raise SearchFailed(f"laws: every LR diverged at {m:g}× {AXES[axis]} (from {lrs[0]:.3g} up)")
        stars.append(opt.lr)
        points.append(
            {
                "multiple": float(m),
                AXES[axis]: getattr(point.train, axis),
                "lr": float(opt.lr),
                "interior": opt.interior,
                "note": opt.note,
                "grid": [{"lr": float(a), "loss": float(b)} for a, b in zip(lrs, losses, strict=True)],
            }
        )
    law = fit_law(axis, multiples, stars)
    law.points = points
    law.flops = sum(float(runs.rows[k]["flops"]) for k in keys)
    law.seconds = sum(float(runs.rows[k]["seconds"]) for k in keys)
    law.separate_flops = sum(float(runs.rows[k].get("separate_flops") or runs.rows[k]["flops"]) for k in keys)
    law.seeds = seeds_of(spec)
    law.branched = branched(spec, axis)
    return law


def fit_laws(
    spec: Spec,
    run_dir: Path,
    best: Best,
    events: Events = SILENT,
    multiples: dict[str, list[float]] | None = None,
) -> Best:
    """Fit the laws ``multiples`` asks for (default: ``spec.search.laws``) around best.yaml's winner;
    write laws/laws.yaml and best.yaml with them; return the new best.yaml."""
    hp = best.hparams
    runs = Runs(run_dir / "laws" / "runs.csv")
    asked = multiples or {a: getattr(spec.search.laws, a) for a in AXES}
    laws = {}
    for axis, ms in asked.items():
        if ms:
            laws[axis] = fit_axis(spec, hp, axis, sorted(set(ms)), runs, events).to_dict()
    doc = {
        "around": {"trial_number": best.provenance.get("trial_number"), "hparams": asdict(hp)},
        "laws": laws,
    }
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    atomic_write(run_dir / "laws" / "laws.yaml", lambda p: p.write_text(text, encoding="utf-8"))
    merged = merge(best.to_dict(), run_dir)
    atomic_write(
        run_dir / "best.yaml",
        lambda p: p.write_text(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), encoding="utf-8"),
    )
    return Best.from_dict(merged, str(run_dir / "best.yaml"))


def merge(best: dict, run_dir: Path) -> dict:
    """best.yaml with the laws of laws/laws.yaml, when they were fitted around its winner, and their
    compute in the tuning cost (``search_flops`` = trials' + laws')."""
    path = run_dir / "laws" / "laws.yaml"
    if not path.is_file():
        return best
    doc = yaml.safe_load(path.read_text()) or {}
    prov = best.setdefault("provenance", {})
    around = doc.get("around") or {}
    if around.get("trial_number") != prov.get("trial_number") or around.get("hparams") != best.get("hparams"):
        return best  # the winner changed since: those laws were measured around another point
    trials_flops = float(prov.get("trials_flops", prov.get("search_flops") or 0.0))
    laws_flops = sum(float(law.get("flops") or 0.0) for law in doc["laws"].values())
    best["laws"] = doc["laws"]
    prov.update(trials_flops=trials_flops, laws_flops=laws_flops, search_flops=trials_flops + laws_flops)
    return best


ARGUMENT = {"steps": "multiples.steps", "batch_size": "multiples.batch_size"}  # errors name them


def extend(
    run_dir: Path,
    multiples: dict[str, list[float]],
    *,
    seeds: int | None = None,
    lr_step: float | None = None,
    lr_points: int | None = None,
    threads: int | None = None,
    events: Events = SILENT,
) -> Best:
    """``mutune laws``: fit (or extend) the laws of an existing run dir. The multiples asked are added
    to those laws/laws.yaml already holds; runs in laws/runs.csv are reused, so only new points train.
    The runs use ``threads`` CPU threads, by default this process's share of the cores (not the
    search's, which config.yaml records for its workers)."""
    spec, best = RunDir(Path(run_dir)).load()
    path = run_dir / "laws" / "laws.yaml"
    had = (yaml.safe_load(path.read_text()) or {}).get("laws", {}) if path.is_file() else {}
    changes: dict[str, Any] = {}
    for axis, ms in multiples.items():
        if ms:
            known = [p["multiple"] for p in (had.get(axis) or {}).get("points", [])]
            changes[f"search.laws.{axis}"] = sorted(set(ms) | set(known))
    if not changes:
        raise SpecError(
            "multiples.steps",
            f"give the multiples to fit at, e.g. {arg('multiples.steps', [0.25, 0.5, 1])} or "
            f"{arg('multiples.batch_size', [0.5, 1, 2])}",
        )
    for key, value in (("seeds", seeds), ("lr_step", lr_step), ("lr_points", lr_points)):
        if value is not None:
            changes[f"search.laws.{key}"] = value
    changes["train.threads"] = threads
    try:
        spec = spec.edit(changes)
    except SpecError as e:
        axis = e.key.split(".")[2].split("[")[0] if e.key.startswith("search.laws.") else ""
        raise SpecError(ARGUMENT.get(axis, e.key.replace("search.laws.", "")), e.message) from None
    asked = {a: getattr(spec.search.laws, a) for a in AXES}
    try:
        return fit_laws(spec, run_dir, best, events, asked)
    except SpecError as e:
        axis = e.key.rsplit(".", 1)[-1]
        raise SpecError(ARGUMENT.get(axis, e.key), e.message) from None
