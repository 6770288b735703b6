"""The run directory, typed and torch-free: ``RunDir`` reads a search's config.yaml and best.yaml into
a :class:`~mutune.config.schema.Spec` and a :class:`Best`, and a run dir belongs to one study.

A search's run dir holds that study's best.yaml, trials.csv and config.yaml, and its targets were
trained from that best.yaml. Another study written into it would overwrite them silently (and a
killed target's plan would no longer match its checkpoint), so mutune refuses it and names the key
to change. Sweeps keep their own studies (``<name>-sweep-<param>``) beside the search's, in the same
storage; their files live under ``checks/``.

Within one process the search hands its :class:`Best` to the transfer as an object; files are read
only by a later command (``mutune transfer RUN``, ``mutune report RUN``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, arg
from .load import hparams_from_dict, spec_from_dict
from .schema import HParams, Spec
from .typed import read_yaml

PROVENANCE_TAGS = ("spec_hash", "study_name", "trial_number", "loss", "proxy_width", "coord_check")


@dataclass
class Best:
    """best.yaml: the winning hyperparameters, where they came from, and the laws fitted around them."""

    hparams: HParams
    provenance: dict[str, Any] = field(default_factory=dict)
    laws: dict[str, Any] | None = None

    @property
    def search_flops(self) -> float:
        return float(self.provenance.get("search_flops") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"hparams": asdict(self.hparams), "provenance": self.provenance}
        if self.laws is not None:
            doc["laws"] = self.laws
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "best.yaml") -> Best:
        """best.yaml's document, each part checked (the file named in every error)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("hparams"), dict):
            raise SpecError(where, "has no 'hparams' mapping")
        prov = doc.get("provenance") or {}
        if not isinstance(prov, dict):
            raise SpecError(where, "its 'provenance' is not a mapping")
        laws = doc.get("laws")
        if laws is not None and not isinstance(laws, dict):
            raise SpecError(where, "its 'laws' is not a mapping")
        return cls(hparams_from_dict(doc["hparams"], f"{where}: hparams"), prov, laws)


@dataclass(frozen=True)
class RunDir:
    """A search's run directory."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def best_path(self) -> Path:
        return self.path / "best.yaml"

    def load(self) -> tuple[Spec, Best]:
        """The proxy spec (config.yaml) and best.yaml of a finished search."""
        self._exists()
        if not self.best_path.is_file():
            raise SpecError(
                str(self.best_path), "not found; is this a finished `mutune search` run directory?"
            )
        spec, best = self.spec(), self.best()
        assert best is not None
        return spec, best

    def spec(self) -> Spec:
        """The resolved spec the search ran (config.yaml)."""
        self._exists()
        if not self.config_path.is_file():
            raise SpecError(str(self.config_path), "not found; is this a `mutune search` run directory?")
        return spec_from_dict(read_yaml(self.config_path))

    def best(self) -> Best | None:
        """best.yaml, or None before a trial has completed."""
        if not self.best_path.is_file():
            return None
        return Best.from_dict(read_yaml(self.best_path, "best.yaml"), str(self.best_path))

    def _exists(self) -> None:
        if not self.path.is_dir():
            raise SpecError(str(self.path), "run directory not found")

    @staticmethod
    def latest(root: str | Path = "runs") -> RunDir:
        """The run directory (one holding a best.yaml) under ``root`` that was used last: by its newest
        file two levels down, so a target trained, a law fitted or a report written counts, not only
        the search that last rewrote best.yaml."""
        root = Path(root)
        runs = [p.parent for p in root.glob("*/best.yaml")] if root.is_dir() else []
        if not runs:
            raise SpecError(
                str(root), "no run directory with a best.yaml here; run `mutune search` first or name RUN_DIR"
            )
        return RunDir(max(runs, key=_last_used))

    def claim(self, spec: Spec) -> None:
        """A run dir holds one search study: its best.yaml, trials.csv and config.yaml describe it, and
        its targets' checkpoints were trained from that best.yaml. A search for another study (another
        ``name`` or ``search.study_name``) or in another storage is refused, naming the key, rather than
        overwriting them. (The same study with a different spec is refused by the study's spec guard.)"""
        run_dir = self.path
        if run_dir.exists() and not run_dir.is_dir():
            raise SpecError("run_dir", f"{run_dir} is a file, not a folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.is_file():
            return
        theirs = read_yaml(self.config_path, "run dir config")
        search = theirs.get("search") if isinstance(theirs.get("search"), dict) else {}
        their_name = search.get("study_name") or theirs.get("name")
        mine = spec.search.study_name or spec.name
        if their_name != mine:
            key = "search.study_name" if spec.search.study_name or search.get("study_name") else "name"
            raise SpecError(
                key,
                f"{run_dir} holds the study {their_name!r} (see its config.yaml), and a run dir holds one study; "
                f"give study {mine!r} its own {arg('run_dir')} (or use {key}={their_name} to continue that one)",
            )
        default = str(run_dir / "study.journal")
        their_storage, my_storage = (
            None if s == default else s for s in (search.get("storage"), spec.search.storage)
        )
        if their_storage != my_storage:
            raise SpecError(
                "search.storage",
                f"{run_dir}'s study {mine!r} lives in {their_storage or run_dir / 'study.journal'}, not in "
                f"{my_storage or run_dir / 'study.journal'}; give this one its own {arg('run_dir')}",
            )


def _last_used(run_dir: Path) -> float:
    """The newest modification time among a run dir's files and those of its folders (targets, laws,
    checks, report)."""
    newest = 0.0
    for p in (*run_dir.iterdir(), *run_dir.glob("*/*")):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:  # removed meanwhile
            continue
    return newest
