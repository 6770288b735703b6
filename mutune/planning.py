"""Planning a target run: the proxy's spec at the new shape (:func:`mutune.config.derive`), provenance
checks, the laws, and the cost (parameters, FLOPs, memory per GPU, the tuning cost as a share).

Width and depth rescale no hyperparameter: under µP the per-parameter multipliers, derived from
``width / base_width`` (and CompleteP's from ``depth / base_depth``), absorb the change. The horizon
and the batch size do move the optimal LR: where best.yaml holds a law fitted on the proxy
(:mod:`mutune.laws`), the target's LR follows it (``no_laws`` keeps it literal). The plan is
computed on the meta device, so planning a width-8192 model allocates nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import arguments, config, flops, laws, memory, models
from .config import Best, HParams, RunDir, Spec, SpecError
from .config import axes as spec_axes
from .device import resolve_device, threads_for
from .errors import arg
from .mup.axes import AXES

STRATEGIES = ("ddp", "fsdp")
DEFAULT_GPU_GIB = memory.FALLBACK_GIB  # a device this machine lacks; else the run's device, or --gpu-memory


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
    overrides: list[str]  # the target's changes, as KEY=VALUE
    warnings: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # provenance mismatches overridden with --force
    nproc: int = 1  # processes (GPUs) the run is planned for
    gpu_gib: float = DEFAULT_GPU_GIB  # the memory per process the estimates are compared with, GiB
    memory_budget: str = ""  # where gpu_gib comes from: --gpu-memory, or the run's device here
    provenance: dict[str, Any] = field(default_factory=dict)  # best.yaml's
    transferred_hparams: HParams | None = None  # best.yaml's, before the laws adjusted them
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # the laws applied (mutune.laws)
    gpus: int | None = None  # GPUs the layout is planned for (--gpus, --nproc, or those detected)
    layout_gib: float = (
        DEFAULT_GPU_GIB  # GiB per GPU of the layouts: gpu_gib, but 80 on a machine without GPUs
    )

    @property
    def search_planned(self) -> bool:
        """The search is the spec's as planned (a spec file, before its search), not trials measured."""
        return bool(self.provenance.get("search_planned"))

    @property
    def tuning_cost_pct(self) -> float:
        """Search compute as a percentage of the target run's compute."""
        return 100.0 * self.search_flops / self.cost.total_flops

    @property
    def gpu_memory(self) -> flops.Memory:
        """The run's memory as it trains on GPUs: in bf16 where ``train.precision`` lets it (``auto``
        autocasts on CUDA), whatever device this plan is made on."""
        t = self.spec.train
        bf16 = t.precision == "bf16" or (t.precision == "auto" and t.device in ("auto", "cuda"))
        assert self.cost.memory is not None
        return self.cost.memory.in_precision(bf16)

    @property
    def layout(self) -> flops.Layout | None:
        """The layout that fits ``gpus`` GPUs of ``layout_gib`` (:func:`mutune.flops.plan_layout`), or
        None (no GPU count known, or nothing fits there: see :attr:`needs`)."""
        return flops.plan_layout(self.gpu_memory, self.layout_gib, self.gpus) if self.gpus else None

    @property
    def needs(self) -> flops.Layout | None:
        """The layout on the fewest GPUs of ``layout_gib`` that hold the run; None when none does."""
        return flops.plan_layout(self.gpu_memory, self.layout_gib)

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
            "memory_budget": self.memory_budget,
            "per_gpu": {s: g.to_dict() for s, g in self.per_gpu.items()},
            "gpus": self.gpus,
            "layout_gib": self.layout_gib,
            "layout": None if self.layout is None else self.layout.to_dict(),
            "gpus_needed": None if self.needs is None else self.needs.to_dict(),
        }


def planned_run(spec_path: Path, smoke: bool = False) -> tuple[RunDir, Spec, Best]:
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
    run = RunDir(Path("runs") / (f"{proxy.name}-smoke" if smoke else proxy.name))  # search.default_run_dir
    return run, proxy, Best(proxy.hparams, prov)


def check_provenance(proxy: Spec, best: Best, best_path: Path, force: bool) -> list[str]:
    """Refuse hyperparameters tuned for another model (:func:`mutune.arguments.provenance`, torch-free,
    so the command line refuses them before loading torch)."""
    return arguments.provenance(proxy, best, best_path, force)


def plan(
    run_dir: str | Path | RunDir | None,
    to: list[str] | tuple[str, ...] = (),
    *,
    smoke: bool = False,
    force: bool = False,
    nproc: int = 1,
    gpu_gib: float | None = None,
    dry_run: bool = False,
    no_laws: bool = False,
    proxy: Spec | None = None,
    best: Best | None = None,
    gpus: int | None = None,
) -> Plan:
    """Derive the target and cost it, in total and per GPU at ``nproc`` GPUs of ``gpu_gib`` GiB, and
    the layout that fits ``gpus`` GPUs (default: ``nproc`` above 1, else the GPUs this machine has)
    and the fewest GPUs that hold it;
    allocates no weights. ``run_dir`` may be a spec file when ``dry_run``: the plan of its target, with
    its own hparams and its search's planned cost (:func:`planned_run`). ``proxy`` and ``best``: the
    search's own objects (a search launching its target), so nothing is read back from disk.
    best.yaml's fitted laws (``laws:``) adjust the LR of a target at another horizon or batch size,
    unless ``no_laws``."""
    run = (
        run_dir
        if isinstance(run_dir, RunDir)
        else RunDir.latest()
        if run_dir is None
        else RunDir(Path(run_dir))
    )
    if run.path.is_file():
        if not dry_run:
            raise SpecError(
                str(run.path),
                "is a spec, not a search run directory: search it first, or plan it with "
                f"{arg('dry_run', True)}",
            )
        run, proxy, best = planned_run(run.path, smoke)
    elif proxy is None or best is None:
        proxy, best = run.load()
    forced = check_provenance(proxy, best, run.best_path, force)
    target = config.derive(proxy, config.target.changes_for(proxy, to), smoke_run=smoke, force=force)
    models.check_axes(target.spec)  # an axis its model cannot apply is refused, not planned
    hp, lp, warnings = _apply_laws(best, proxy, target, smoke, no_laws, run.path)
    # this process's share of the cores, shared with the ranks on this machine; its config.yaml records it
    local = int(os.environ.get("LOCAL_WORLD_SIZE", nproc))
    spec = target.spec.edit({"train.threads": threads_for(target.spec.train.threads, local)})
    # what the estimate must fit: --gpu-memory, else what the run's device has free here
    gib, where = (gpu_gib, "--gpu-memory") if gpu_gib is not None else memory.budget(spec.train.device, local)
    p = Plan(
        run_dir=run.path,
        target_dir=run.path / f"target-{target.key()}{'-nolaws' if lp.skipped else ''}",
        spec=spec,
        hparams=hp,
        cost=flops.cost(spec, hp=hp),
        proxy_cost=flops.cost(proxy, hp=hp),
        proxy_width=proxy.model.width,
        search_flops=best.search_flops,
        overrides=[f"{k}={json.dumps(v)}" for k, v in target.changes.items()],
        warnings=forced + warnings,
        forced=forced,
        nproc=nproc,
        gpu_gib=gib,
        memory_budget=where,
        provenance=best.provenance,
        transferred_hparams=best.hparams,
        adjustments=lp.adjustments,
        gpus=gpus or (nproc if nproc > 1 else _detected_gpus()),
        layout_gib=gib if gpu_gib is not None or _on_gpu(spec.train.device) else DEFAULT_GPU_GIB,
    )
    if nproc > 1:
        p.warnings += flops.fit_warnings(p.per_gpu, p.spec.train.parallel, p.gpu_gib)
    return p


def _on_gpu(device_name: str) -> bool:
    """The run's device here is a GPU (so its memory is what a layout must fit), not the CPU: a plan
    made on a machine without GPUs lays the run out on GPUs of :data:`DEFAULT_GPU_GIB`, or of
    ``--gpu-memory``, not on this machine's RAM."""
    try:
        return resolve_device(device_name).type == "cuda"
    except SpecError:
        return False


def _detected_gpus() -> int | None:
    """The CUDA devices this process sees, or None (a plan made on a machine without GPUs)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else None


def _apply_laws(
    best: Best, proxy: Spec, target: config.Target, smoke: bool, no_laws: bool, run_dir: Path
) -> tuple[HParams, laws.LawPlan, list[str]]:
    """The hparams after best.yaml's laws; the approximate-transfer warnings a law covers are dropped."""
    base = config.smoke(proxy) if smoke else proxy  # what the target started from, as derive did
    hp = asdict(best.hparams)
    lp = laws.plan_laws(best.laws, hp, base.train, target.spec.train, no_laws=no_laws)
    kept = lp.edit_warnings(target.warnings, str(run_dir))
    return config.hparams_from_dict({**hp, **lp.hparams}), lp, kept


def multipliers_of(spec: Spec, hp: HParams) -> dict[str, Any]:
    """The axes' and the forward multipliers a target run applies (recorded in its plan.yaml)."""
    out: dict[str, Any] = {}
    for axis in AXES.values():
        if not spec_axes.present(spec, axis):  # a family without the axis (a GPT has no experts)
            continue
        out[f"{axis.name}_mult"] = spec_axes.mult(spec, axis)
        out[f"base_{axis.name}"] = spec_axes.base(spec, axis)
    mult = models.forward_multipliers(spec, hp)
    out.update(
        depth_alpha=spec.model.depth_alpha,
        residual_mult=mult.residual,
        output_mult=mult.output,
        input_mult=mult.input,
    )
    if mult.attn is not None:
        out["attn_mult"] = mult.attn
    return out
