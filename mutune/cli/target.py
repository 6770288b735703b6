"""A target run for people: its plan (shape, parameters, FLOPs, memory, hparams, tuning cost) before
it trains, and its outcome line after. ``mutune transfer`` and the search's own target print both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ..config import hparams_used
from ..units import human, human_bytes
from .console import err, fmt_secs, out, show

if TYPE_CHECKING:
    from ..transfer import TransferResult


def print_plan(p: Any) -> None:
    """A ``transfer.Plan`` as a table: shape, parameters, FLOPs, memory, hparams, tuning cost."""
    c = p.cost
    table = Table(title=f"target plan: {p.target_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("width", f"{p.spec.model.width} (proxy {p.proxy_width}, base {p.spec.model.base_width})")
    table.add_row("parameters", f"{human(c.params)} ({c.params:,})")
    table.add_row("FLOPs / step", human(c.flops_per_step))
    table.add_row("FLOPs total", f"{human(c.total_flops)} over {c.steps} steps")
    one = "fits" if c.memory_bytes <= p.gpu_gib * (1 << 30) else "does not fit"
    given = p.memory_budget in ("", "--gpu-memory")  # the --gpu-memory given, else the run's device here
    budget = f" in {p.gpu_gib:g} GiB (--gpu-memory)" if given else f": {p.memory_budget}"
    table.add_row("memory (est.)", f"{human_bytes(c.memory_bytes)} in one process; {one}{budget}")
    if p.nproc > 1:
        table.add_row(
            "parallel", f"{p.spec.train.parallel} over {p.nproc} GPUs (train.parallel: ddp or fsdp)"
        )
        for strategy, g in p.per_gpu.items():
            fit = "fits" if g.fits(p.gpu_gib) else "does not fit"
            table.add_row(
                f"per GPU, {strategy}",
                f"{human_bytes(g.total)}: {fit} in {human_bytes(p.gpu_gib * (1 << 30))}",
            )
    m = p.spec.model
    used = hparams_used(m.family, p.spec.train.optimizer, m.parametrization)
    table.add_row(
        "hparams (the spec's; not searched yet)" if p.search_planned else "hparams",
        ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in vars(p.hparams).items()
            if k in used  # the rest change nothing in this run: listing them reads as if they did
        ),
    )
    for adj in p.adjustments:
        table.add_row("law applied" if adj.get("applied", True) else "law not applied", adj["description"])
    if p.search_flops:
        planned = (
            f"planned: {p.provenance['n_trials']} trials x {human(p.provenance['trial_flops'], ' FLOPs')} each; "
            if p.search_planned
            else ""
        )
        table.add_row(
            "tuning cost",
            f"search compute = {p.tuning_cost_pct:.1f}% of the target run "
            f"({planned}{human(p.search_flops)} / {human(c.total_flops)} FLOPs)",
        )
    show(table)
    for w in p.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def submitted(sub: Any, what: str) -> None:
    """Jobs handed to Slurm (``--launcher slurm``): their ids and how to follow them."""
    ids = ", ".join(sub.ids)
    out.print(f"submitted {what} as {sub.cluster} job(s) {ids}; logs in {sub.folder}", highlight=False)
    for line in sub.follow():
        out.print(f"  {line}", highlight=False)


def print_target(res: TransferResult) -> int:
    """The target's outcome on one line; its exit code (1 when it diverged)."""
    r = res.result
    if r is None:
        return 0
    if r.diverged:
        err.print(f"[red]target diverged:[/] {r.reason} (see {res.plan.target_dir})", highlight=False)
        return 1
    out.print(
        f"target val loss {r.final_val_loss:.4f} after {r.steps} steps ({fmt_secs(r.seconds)}) "
        f"-> {res.plan.target_dir}",
        highlight=False,
    )
    return 0


def print_laws(laws: dict | None, path: Path) -> None:
    """One line per fitted law: its exponent and interval, its points, and what it cost (against
    separate runs, where WSD branches gave each LR's horizons from one run)."""
    for axis, law in (laws or {}).items():
        iv = law["interval"]
        interval = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "none (2 points)"
        cost = f"{human(law['flops'])}FLOPs"
        separate = law.get("separate_flops") or law["flops"]
        if law.get("branched") and separate:
            cost += f" from WSD branches, {law['flops'] / separate:.2f}x separate runs' {human(separate)}"
        out.print(
            f"{law['key']}: LR* ∝ {axis}^{law['exponent']:.3f}, 95% interval {interval}, "
            f"{len(law['points'])} points, {law.get('seeds', 1)} seed(s), {cost} -> {path}",
            highlight=False,
        )


def decided(ladder: dict) -> str:
    """Where the ladder's winner was decided: ``width 128``, or ``200 steps`` along training length."""
    steps = ladder.get("decided_at_steps")
    return f"{steps} steps" if steps else f"width {ladder['decided_at_width']}"
