"""The run dir belongs to one study.

A search's run dir holds that study's best.yaml, trials.csv and config.yaml, and its targets were
trained from that best.yaml. Another study written into it would overwrite them silently (and a
killed target's plan would no longer match its checkpoint), so mutune refuses it and names the key
to change. Sweeps keep their own studies (``<name>-sweep-<param>``) beside the search's, in the same
storage; their files live under ``checks/``.
"""

from __future__ import annotations

from pathlib import Path

from .config import Spec, SpecError, read_yaml


def claim_run_dir(run_dir: Path, spec: Spec) -> None:
    """A run dir holds one search study: its best.yaml, trials.csv and config.yaml describe it, and
    its targets' checkpoints were trained from that best.yaml. A search for another study (another
    ``name`` or ``search.study_name``) or in another storage is refused, naming the key, rather than
    overwriting them. (The same study with a different spec is refused by :func:`open_study`.)"""
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError("--run-dir", f"{run_dir} is a file, not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return
    theirs = read_yaml(cfg, "run dir config")
    search = theirs.get("search") if isinstance(theirs.get("search"), dict) else {}
    their_name = search.get("study_name") or theirs.get("name")
    mine = spec.search.study_name or spec.name
    if their_name != mine:
        key = "search.study_name" if spec.search.study_name or search.get("study_name") else "name"
        raise SpecError(
            key,
            f"{run_dir} holds the study {their_name!r} (see its config.yaml), and a run dir holds one study; "
            f"give study {mine!r} its own --run-dir (or use {key}={their_name} to continue that one)",
        )
    default = str(run_dir / "study.journal")
    their_storage, my_storage = (
        None if s == default else s for s in (search.get("storage"), spec.search.storage)
    )
    if their_storage != my_storage:
        raise SpecError(
            "search.storage",
            f"{run_dir}'s study {mine!r} lives in {their_storage or run_dir / 'study.journal'}, not in "
            f"{my_storage or run_dir / 'study.journal'}; give this one its own --run-dir",
        )
