"""The search's plan and its finalists ladder as plain lines, for the CLI (``search`` before it
starts, ``report`` after): how the budget splits into proxy trials and rungs, and how each rung ranked."""

from __future__ import annotations

from typing import Any

from .units import human


def plan_lines(plan: Any) -> list[str]:
    """The search's split (a ``budget.Plan``), when there is more to say than "N trials"."""
    if plan.budget is None and not plan.rungs:
        return []
    proxy = plan.n_proxy * plan.proxy_flops
    lines = [f"plan: {plan.n_proxy} proxy trials at width {plan.proxy_width} ({human(proxy)}FLOPs)"]
    if plan.rungs:
        rungs = ", then ".join(
            f"{r.entrants} at width {r.width} x {len(r.seeds)} seed{'s' if len(r.seeds) > 1 else ''}"
            for r in plan.rungs
        )
        lines.append(
            f"  + ladder: the top {plan.finalists} re-run: {rungs} ({plan.ladder_runs} runs, "
            f"{human(plan.ladder_flops)}FLOPs)"
        )
    elif plan.finalists:
        lines.append(f"  no ladder: {plan.finalists} finalist leaves nothing to choose between")
    total = f"  = {human(plan.total_flops)}FLOPs"
    if plan.target_flops:
        total += f", {plan.total_flops / plan.target_flops:.1%} of one target run ({human(plan.target_flops)}FLOPs)"
    if plan.budget is not None:
        total += (
            f"; budget {plan.budget:g} = {human(plan.budget_flops)}FLOPs (upper bound: trials are counted at "
            "full length; exact in trial counts with any number of workers on this machine)"
        )
    return [*lines, total]


def ladder_lines(ladder: dict | None) -> list[str]:
    """best.yaml's ladder, a line per rung: each entrant's mean loss (proxy trial number), who moved on."""
    if not ladder:
        return []
    lines = []
    for r in ladder["rungs"]:
        cells = ", ".join(
            f"#{e['trial']} {e['mean']:.4f}" if e["mean"] is not None else f"#{e['trial']} -"
            for e in r["entrants"]
        )
        kept = f"; kept {', '.join(f'#{t}' for t in r['kept'])}" if r["kept"] else ""
        lines.append(f"ladder: width {r['width']} x {len(r['seeds'])} seed(s): {cells}{kept}")
    if ladder.get("winner") is not None:
        state = "winner" if ladder["done"] else "leader so far"
        lines.append(f"ladder: {state} #{ladder['winner']} (decided at width {ladder['decided_at_width']})")
    return lines
