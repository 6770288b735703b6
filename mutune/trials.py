"""The search's trials as a table (trials.csv): one row per trial, proxy and ladder alike.

Torch-free (Optuna and pandas), so that ``mutune report`` reads a run without the training stack.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from . import ladder
from .files import atomic_write


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, rung, width, seed, loss, every HP, steps, tokens, FLOPs,
    seconds, CPU threads, reason. Proxy trials are rung 0; a ladder trial's rung is its width's place in the plan."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    recorded = (study.user_attrs.get("search_plan") or {}).get("plan") or {}
    relevant = study.user_attrs.get("spec") or {}
    proxy_width, proxy_seed = relevant.get("model.width"), relevant.get("seed")
    rung_of = {(r["width"], r.get("steps")): i + 1 for i, r in enumerate(recorded.get("rungs", []))}
    retried_as = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        ua = t.user_attrs
        fixed = ua.get("fixed_params") or {}
        width = fixed.get(ladder.WIDTH)
        row = {
            "number": t.number,
            "state": t.state.name,
            "rung": 0 if width is None else rung_of.get((width, fixed.get(ladder.STEPS))),
            "width": proxy_width if width is None else width,
            "seed": proxy_seed if width is None else fixed.get(ladder.SEED),
            "loss": t.value if t.state == TrialState.COMPLETE else None,
        }
        row.update(t.params)
        for key in ("steps", "tokens", "flops", "seconds", "params", "threads"):
            row[key] = ua.get(key)
        row["fail_reason"] = ua.get("fail_reason", "")
        if t.number in retried_as:
            reason = row["fail_reason"] or "worker gone (heartbeat stopped)"
            row["fail_reason"] = f"{reason}; retried as #{retried_as[t.number]}"
        row["worker"] = ua.get("worker", "")
        row["datetime_start"] = t.datetime_start.isoformat() if t.datetime_start else ""
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials_csv(study: optuna.Study, run_dir: Path) -> pd.DataFrame:
    df = trials_table(study)
    atomic_write(run_dir / "trials.csv", lambda p: df.to_csv(p, index=False))
    return df
