"""Planning a target run: the proxy's spec at the new shape, what may change and what may not,
provenance checks, and the cost (parameters, FLOPs, memory per GPU, the tuning cost as a share).

Width and depth rescale no hyperparameter: under µP the per-parameter multipliers, derived from
``width / base_width`` (and CompleteP's from ``depth / base_depth``), absorb the change. The horizon
and the batch size do move the optimal LR: where best.yaml holds a law fitted on the proxy
(:mod:`mutune.laws`), the target's LR follows it (``no_laws`` keeps it literal). The plan is
computed on the meta device, so planning a width-8192 model allocates nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import config, flops, laws, models
from .config import HParams, Spec, SpecError
from .registry import FAMILIES, OPTIMIZERS
from .typed import leaf_keys, parse_override

# Keys a target may change that µTransfer carries only approximately (TP5 §6.1): say so.
APPROXIMATE = {
    "train.steps": "training horizon: the optimal LR falls with it (Bjorck et al. 2025); fit the law on the "
    "proxy with `mutune laws RUN_DIR --steps 0.25,0.5,1` and the transfer applies it",
    "train.batch_size": "batch size: transfers roughly (TP5 Fig. 19) if both are above the critical batch; fit "
    "the law on the proxy with `mutune laws RUN_DIR --batch-size 0.5,1,2` and the transfer applies it",
    "train.warmup_steps": "warmup: a ratio tuned at small width sometimes needs lengthening at large width",
    "model.seq_len": "sequence length: transfers roughly (TP5 Fig. 19) from ~128 up",
    "model.mlp_ratio": "MLP ratio: a different shape; the multipliers adapt but the optimum may move",
    "model.factory_kwargs": "a different shape of your model; the multipliers adapt but the optimum may move",
    "data": "a different corpus: the proxy's optimum was found on other data",
    "hparams.weight_decay": "weight decay does not µTransfer",
}
# Keys that would change what the hyperparameters mean: refused.
FIXED = {
    "model.base_width": "it defines what the tuned hyperparameters mean",
    "model.parametrization": "the hyperparameters were tuned under the proxy's parametrization",
    "model.family": "the hyperparameters were tuned on the proxy's model family",
    "model.head_dim": "the proxy's head_dim fixes the attention base; use n_head/head_dim as the proxy did",
    "model.n_head": "the proxy's head count fixes the attention base",
    "model.factory": "the hyperparameters were tuned on the proxy's model",
    "model.readout": "it decides where α_out/m applies, part of what the hyperparameters mean",
    "model.base_depth": "it defines what the tuned hyperparameters mean along depth (m_L = depth / base_depth)",
    "model.depth_alpha": "the hyperparameters were tuned under the proxy's depth parametrization",
}
SMOKE_MAX_WIDTH = 128
STRATEGIES = ("ddp", "fsdp")
PROVENANCE_TAGS = ("spec_hash", "study_name", "trial_number", "loss", "proxy_width", "coord_check")
DEFAULT_GPU_GIB = 80.0  # an 80 GB A100/H100, the usual training GPU; --gpu-memory changes it
# Keys that do not change what is trained: they do not name the target folder.
UNNAMED_KEYS = {
    "train.checkpoint_every",
    "train.device",
    "train.compile",
    "train.eval_every",
    "train.eval_batches",
    "train.parallel",
    "train.activation_checkpointing",
    "tracker.backend",
    "tracker.dir",
    "tracker.project",
    "train.memory_check",
}


@dataclass
class Plan:
    run_dir: Path
    target_dir: Path
    spec: Spec
    hparams: HParams
    cost: flops.Cost
    proxy_cost: flops.Cost
    proxy_width: int
    search_flops: float
    overrides: list[str]
    warnings: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # provenance mismatches overridden with --force
    nproc: int = 1  # processes (GPUs) the run is planned for
    gpu_gib: float = DEFAULT_GPU_GIB  # the GPU memory the per-GPU estimates are compared with
    provenance: dict[str, Any] = field(default_factory=dict)  # best.yaml's
    transferred_hparams: HParams | None = None  # best.yaml's, before the laws adjusted them
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # the laws applied (mutune.laws)

    @property
    def search_planned(self) -> bool:
        """The search is the spec's as planned (a spec file, before its search), not trials measured."""
        return bool(self.provenance.get("search_planned"))

    @property
    def tuning_cost_pct(self) -> float:
        """Search compute as a percentage of the target run's compute."""
        return 100.0 * self.search_flops / self.cost.total_flops

    @property
    def per_gpu(self) -> dict[str, flops.PerGPU]:
        """Memory per GPU under each strategy at ``nproc`` GPUs (see :func:`mutune.flops.per_gpu`)."""
        return {s: flops.per_gpu(self.cost.memory, self.nproc, s) for s in STRATEGIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "target_dir": str(self.target_dir),
            "overrides": self.overrides,
            "width": self.spec.model.width,
            "proxy_width": self.proxy_width,
            "hparams": asdict(self.hparams),
            "transferred_hparams": asdict(self.transferred_hparams or self.hparams),
            "adjustments": self.adjustments,
            "multipliers": multipliers_of(self.spec, self.hparams),
            "cost": self.cost.to_dict(),
            "search_flops": self.search_flops,
            "search_planned": self.search_planned,
            "tuning_cost_pct": self.tuning_cost_pct,
            "warnings": self.warnings,
            "forced": self.forced,
            "nproc": self.nproc,
            "parallel": self.spec.train.parallel,
            "gpu_gib": self.gpu_gib,
            "per_gpu": {s: g.to_dict() for s, g in self.per_gpu.items()},
        }


def latest_run(root: str | Path = "runs") -> Path:
    """The most recently modified run directory (one holding a best.yaml) under ``root``."""
    root = Path(root)
    runs = [p.parent for p in root.glob("*/best.yaml")] if root.is_dir() else []
    if not runs:
        raise SpecError(
            str(root), "no run directory with a best.yaml here; run `mutune search` first or name RUN_DIR"
        )
    return max(runs, key=lambda p: (p / "best.yaml").stat().st_mtime)


def load_run(run_dir: str | Path) -> tuple[Spec, dict]:
    """The proxy spec (config.yaml) and the best.yaml document of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpecError(str(run_dir), "run directory not found")
    for name in ("best.yaml", "config.yaml"):
        if not (run_dir / name).is_file():
            raise SpecError(
                str(run_dir / name), "not found; is this a finished `mutune search` run directory?"
            )
    spec = config.spec_from_dict(config.read_yaml(run_dir / "config.yaml"))
    best = config.read_yaml(run_dir / "best.yaml", "best.yaml")
    if not isinstance(best.get("hparams"), dict):
        raise SpecError(str(run_dir / "best.yaml"), "has no 'hparams' mapping")
    return spec, best


def planned_run(spec_path: Path, smoke: bool = False) -> tuple[Path, Spec, dict]:
    """A spec file before its search, as a run to plan from: the run dir its search will write, the
    spec, and a best.yaml of its own hparams with the search's planned compute (budget.make_plan: the
    proxy trials and any ladder, each run to its last step; a pruner would stop some sooner, so this
    is an upper bound)."""
    from . import budget

    proxy = config.load_spec(spec_path, smoke=smoke)
    search_plan = budget.make_plan(proxy)
    prov = {
        "search_flops": search_plan.total_flops,
        "search_planned": True,
        "n_trials": search_plan.n_trials,
        "trial_flops": search_plan.proxy_flops,
    }
    run_dir = Path("runs") / (f"{proxy.name}-smoke" if smoke else proxy.name)  # search.default_run_dir
    return run_dir, proxy, {"hparams": asdict(proxy.hparams), "provenance": prov}


def target_overrides(spec: Spec) -> list[str]:
    """The ``--to`` list that a spec's own ``target`` section means."""
    to = [f"width={spec.target.width}"] if spec.target.width is not None else []
    return to + [f"{k}={json.dumps(v)}" for k, v in spec.target.overrides.items()]


SHORT_KEYS = {"width": "model.width", "depth": "model.depth"}  # --to width=W, --to depth=L


def _canonical(key: str) -> str:
    return SHORT_KEYS.get(key, key)


def target_key(overrides: list[str]) -> str:
    """``['width=1024', 'train.steps=400']`` -> ``width1024-steps400`` (the target-<key> folder)."""
    parts = []
    for token in overrides:
        key, value = parse_override(token)
        if _canonical(key) in UNNAMED_KEYS:
            continue
        parts.append(key.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.]+", "_", str(value)))
    return "-".join(parts) or "default"


def check_provenance(proxy: Spec, best: dict, best_path: Path, force: bool) -> list[str]:
    """Refuse hyperparameters tuned for another model family, base width or depth, or parametrization.

    They would mean something else here (the µP multipliers are relative to the base width the
    search used). ``force`` overrides; what was forced is returned, to be recorded in the plan.
    """
    prov = best.get("provenance") or {}
    mismatches = []
    for key, mine in (
        ("model_family", proxy.model.family),
        ("base_width", proxy.model.base_width),
        ("parametrization", proxy.model.parametrization),
        ("base_depth", proxy.model.base_depth or proxy.model.depth),
        ("depth_alpha", proxy.model.depth_alpha),
    ):
        theirs = prov.get(key)
        if theirs is not None and theirs != mine:
            mismatches.append(f"{key}: best.yaml has {theirs!r}, the spec has {mine!r}")
    if mismatches and not force:
        raise SpecError(
            str(best_path),
            f"was tuned for a different model ({'; '.join(mismatches)}); pass --force to apply it anyway",
        )
    return [f"forced: {m}" for m in mismatches]


def plan(
    run_dir: str | Path | None,
    to: list[str] | tuple[str, ...] = (),
    *,
    smoke: bool = False,
    force: bool = False,
    nproc: int = 1,
    gpu_gib: float | None = None,
    dry_run: bool = False,
    no_laws: bool = False,
) -> Plan:
    """Rebuild the spec for the target and cost it, in total and per GPU at ``nproc`` GPUs of
    ``gpu_gib`` GiB; allocates no weights. ``run_dir`` may be a spec file when ``dry_run``: the
    plan of its target, with its own hparams and its search's planned cost (:func:`planned_run`).
    best.yaml's fitted laws (``laws:``) adjust the LR of a target at another horizon or batch size,
    unless ``no_laws``."""
    run_dir = latest_run() if run_dir is None else Path(run_dir)
    if run_dir.is_file():
        if not dry_run:
            raise SpecError(
                str(run_dir),
                "is a spec, not a search run directory: search it first, or plan it with --dry-run",
            )
        run_dir, proxy, best = planned_run(run_dir, smoke)
    else:
        proxy, best = load_run(run_dir)
    forced = check_provenance(proxy, best, run_dir / "best.yaml", force)
    if all(_canonical(parse_override(t)[0]) in UNNAMED_KEYS for t in to):
        to = [*target_overrides(proxy), *to]  # only how-to-run keys given: the spec's own target, run so
    if all(_canonical(parse_override(t)[0]) in UNNAMED_KEYS for t in to):
        raise SpecError("--to", "give --to width=W (the spec names no target.width)")
    target, warnings = target_spec(proxy, to, smoke=smoke, force=force)
    transferred = config.hparams_from_dict(best["hparams"], f"{run_dir / 'best.yaml'}: hparams")
    hp, lp, warnings = _apply_laws(best, transferred, proxy, target, warnings, smoke, no_laws, run_dir)
    prov = best.get("provenance") or {}
    search_flops = float(prov.get("search_flops") or 0.0)
    p = Plan(
        run_dir=run_dir,
        target_dir=run_dir / f"target-{target_key(to)}{'-nolaws' if lp.skipped else ''}",
        spec=target,
        hparams=hp,
        cost=flops.cost(target, hp=hp),
        proxy_cost=flops.cost(proxy, hp=hp),
        proxy_width=proxy.model.width,
        search_flops=search_flops,
        overrides=list(to),
        warnings=forced + warnings,
        forced=forced,
        nproc=nproc,
        gpu_gib=DEFAULT_GPU_GIB if gpu_gib is None else gpu_gib,
        provenance=prov,
        transferred_hparams=transferred,
        adjustments=lp.adjustments,
    )
    if nproc > 1:
        p.warnings += flops.fit_warnings(p.per_gpu, p.spec.train.parallel, p.gpu_gib)
    return p


def _apply_laws(
    best: dict,
    hp: HParams,
    proxy: Spec,
    target: Spec,
    warnings: list[str],
    smoke: bool,
    no_laws: bool,
    run_dir: Path,
) -> tuple[HParams, laws.LawPlan, list[str]]:
    """The hparams after best.yaml's laws; the approximate-transfer warnings a law covers are dropped."""
    base = config.smoke(proxy) if smoke else proxy  # what the target started from, as target_spec did
    lp = laws.plan_laws(best.get("laws"), asdict(hp), base.train, target.train, no_laws=no_laws)
    kept = lp.edit_warnings(warnings, str(run_dir))
    return config.hparams_from_dict({**asdict(hp), **lp.hparams}), lp, kept


def target_spec(
    proxy: Spec, to: list[str], *, smoke: bool = False, force: bool = False
) -> tuple[Spec, list[str]]:
    """The proxy's spec with the ``--to`` changes, and why any of them transfers only approximately.
    Hyperparameters and what defines their meaning are refused, naming the key."""
    warnings: list[str] = []
    spec_dict = config.smoke(proxy).to_dict() if smoke else proxy.to_dict()
    canonical: list[str] = []
    for token in to:
        key, value = parse_override(token)
        key = _canonical(key)
        _check_key(key)
        section = key.split(".")[0]
        if section == "hparams":
            raise SpecError(
                f"--to {key}", "hyperparameters come from best.yaml, unchanged; tune them in the search"
            )
        if key in FIXED:
            raise SpecError(f"--to {key}", f"cannot change for a transfer: {FIXED[key]}")
        if section in ("search", "target", "name"):
            raise SpecError(f"--to {key}", "not used by a target run")
        note = APPROXIMATE.get(key) or APPROXIMATE.get(section)
        if note and value != _get(spec_dict, key):
            warnings.append(f"{key}={value} does not µTransfer exactly ({note})")
        canonical.append(f"{key}={json.dumps(value)}")
    try:
        target = config.spec_from_dict(spec_dict, canonical)
        target, note = _at_depth(target, spec_dict["model"])
    except SpecError as e:
        raise SpecError(f"--to {e.key}", e.message) from None
    if note:
        warnings.append(note)
    if smoke and target.model.width > SMOKE_MAX_WIDTH:
        warnings.append(f"--smoke: width {target.model.width} capped at {SMOKE_MAX_WIDTH}")
        target = target.edit({"model.width": SMOKE_MAX_WIDTH})
    if force:  # --force also tries a target above the device's free memory (memory.py)
        target = target.edit({"train.memory_check": False})
    return target, warnings


def _check_key(key: str) -> None:
    """A ``--to`` key that is not a spec key is refused with the closest one (``widht`` -> ``width``),
    as a spec file's unknown keys are."""
    sections = {f.name for f in dataclasses.fields(Spec)}
    if "." in key or key in sections:
        return  # dotted keys are checked (with their suggestions) when the target spec is built
    leaves = {k: k for k in SHORT_KEYS}  # width, depth
    for dotted in leaf_keys(Spec):
        leaves.setdefault(dotted.rsplit(".", 1)[-1], dotted)
    hint = difflib.get_close_matches(key, list(leaves), n=1)
    suggestion = f" (did you mean '{leaves[hint[0]]}'?)" if hint else ""
    raise SpecError(f"--to {key}", f"unknown key{suggestion}")


def _at_depth(target: Spec, proxy_model: dict) -> tuple[Spec, str]:
    """A target at another depth than the proxy: CompleteP's rules relative to the proxy's base depth
    (pinned in the target spec) where they apply; otherwise the target as asked and a warning why."""
    depth = target.model.depth
    if depth == proxy_model["depth"]:
        return target, ""
    base = proxy_model["base_depth"] or proxy_model["depth"]
    m = target.model
    why = (
        "model.depth_alpha is 0"
        if m.depth_alpha == 0
        else f"the {m.family} family has no residual branches"
        if not FAMILIES[m.family].residual
        else f"train.optimizer={target.train.optimizer} has no published depth rule"
        if not OPTIMIZERS[target.train.optimizer].depth_rule
        else ""
    )
    if why:
        return target, (
            f"model.depth={depth} does not µTransfer exactly (depth scaling is off: {why}; CompleteP "
            "applies with model.depth_alpha > 0, a residual family and adamw)"
        )
    return target.edit({"model.base_depth": base}), ""


def multipliers_of(spec: Spec, hp: HParams) -> dict[str, Any]:
    """The width and depth multipliers a target run applies (recorded in its plan.yaml)."""
    m = spec.model
    m_L = models.depth_mult(spec)
    mult = models.forward_multipliers(spec, hp)
    return {
        "width_mult": m.width / m.base_width,
        "depth_mult": m_L,
        "base_depth": m.base_depth or m.depth,
        "depth_alpha": m.depth_alpha,
        "residual_mult": mult.residual,
        "output_mult": mult.output,
        "input_mult": mult.input,
    }


def _get(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
