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

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, arg
from ..files import Lock
from .load import hparams_from_dict, spec_from_dict
from .schema import HParams, Spec, hparams_used
from .typed import read_yaml

PROVENANCE_TAGS = ("spec_hash", "study_name", "trial_number", "loss", "proxy_width", "coord_check")

# best.yaml's provenance, by key: the type each value must have (a key not listed is not read)
PROVENANCE_TYPES: dict[str, type | tuple[type, ...]] = {
    "spec_name": str,
    "spec_hash": str,
    "study_name": str,
    "storage": str,
    "model_family": str,
    "parametrization": str,
    "proxy_width": int,
    "base_width": int,
    "base_depth": int,
    "depth_alpha": float,
    "trial_number": int,
    "loss": float,
    "coord_check": str,
    "n_trials_finished": int,
    "search_flops": float,
    "trials_flops": float,
    "laws_flops": float,
    "search_seconds": float,
    "plan": dict,
    "ladder": dict,
    "argv": list,
    "versions": dict,
    "created": str,
    "search_planned": bool,
    "n_trials": int,
    "trial_flops": float,
    "proxy": dict,
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}
_TYPE_NAMES[list] = "a list"


ANY_FLOAT = "any float"  # a number that may be .nan or .inf (a diverged run's loss)


def _check_type(value: Any, tp: Any, key: str) -> None:
    """``value`` of type ``tp`` (a float may be an int; an int or a float is never a bool; a float is
    finite unless ``tp`` is :data:`ANY_FLOAT`)."""
    if tp is None or value is None:
        return
    finite = tp is not ANY_FLOAT
    tp = float if tp is ANY_FLOAT else tp
    ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
    if tp is float and not ok:
        ok = isinstance(value, int) and not isinstance(value, bool)
    if tp is float and ok and finite and not math.isfinite(value):
        ok = False
    if not ok:
        raise SpecError(key, f"expected {_TYPE_NAMES.get(tp, tp)}, got {value!r}; the file is damaged")


# a target's result.yaml and plan.yaml, by key: the type each value read back must have
RESULT_TYPES: dict[str, Any] = {
    "final_val_loss": ANY_FLOAT,
    "diverged": bool,
    "steps": int,
    "tokens": int,
    "flops": float,
    "seconds": float,
    "params": int,
    "reason": str,
    "curve": list,
    "hparams": dict,
    "transfer": dict,
}
RESULT_REQUIRED = ("final_val_loss", "diverged", "steps", "tokens", "flops", "seconds", "params")
PLAN_TYPES: dict[str, Any] = {"width": int, "cost": dict, "hparams": dict, "overrides": list}


def read_run_file(path: Path, what: str, types: dict[str, Any], required: tuple[str, ...] = ()) -> dict:
    """A YAML file mutune wrote in a run dir (result.yaml, plan.yaml), each value read back checked:
    a file that is not a mapping, lacks a ``required`` key or holds a value of the wrong type is one
    line naming the file and the key (never an internal error, never a silent default)."""
    doc = read_yaml(path, what)
    for k in required:
        if k not in doc:
            raise SpecError(f"{path}: {k}", "missing; the file is damaged (move it away, or run again)")
    for k, tp in types.items():
        _check_type(doc.get(k), tp, f"{path}: {k}")
    for i, row in enumerate(doc.get("curve") or []):
        if not isinstance(row, dict):
            raise SpecError(f"{path}: curve[{i}]", f"expected a mapping, got {row!r}; the file is damaged")
        _check_type(row.get("step"), int, f"{path}: curve[{i}].step")
        _check_type(row.get("val_loss"), ANY_FLOAT, f"{path}: curve[{i}].val_loss")
    return doc


def _check_laws(laws: Any, key: str) -> None:
    """The fitted laws as the transfer reads them: by axis, an exponent and the multiples fitted at."""
    if not isinstance(laws, dict):
        raise SpecError(key, "is not a mapping; the file is damaged")
    for axis, law in laws.items():
        here = f"{key}.{axis}"
        if not isinstance(law, dict):
            raise SpecError(here, "is not a mapping; the file is damaged")
        _check_type(law.get("exponent"), float, f"{here}.exponent")
        if law.get("exponent") is None:
            raise SpecError(f"{here}.exponent", "missing; the file is damaged")
        interval = law.get("interval")
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2):
            raise SpecError(f"{here}.interval", f"expected two numbers or null, got {interval!r}")
        for i, v in enumerate(interval or []):
            _check_type(v, float, f"{here}.interval[{i}]")
        points = law.get("points")
        if not isinstance(points, list) or not points:
            raise SpecError(f"{here}.points", "expected a non-empty list; the file is damaged")
        for i, point in enumerate(points):
            m = point.get("multiple") if isinstance(point, dict) else None
            if not isinstance(m, (int, float)) or isinstance(m, bool) or not m > 0 or not math.isfinite(m):
                raise SpecError(f"{here}.points[{i}].multiple", f"expected a number > 0, got {m!r}")


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
        """best.yaml's document, each part checked (the file named in every error): a value of the
        wrong type is one line naming the file and the key, never an internal error further on."""
        if not isinstance(doc, dict) or not isinstance(doc.get("hparams"), dict):
            raise SpecError(where, "has no 'hparams' mapping")
        prov = doc.get("provenance") or {}
        if not isinstance(prov, dict):
            raise SpecError(where, "its 'provenance' is not a mapping")
        for key, value in prov.items():
            _check_type(value, PROVENANCE_TYPES.get(key), f"{where}: provenance.{key}")
        laws = doc.get("laws")
        if laws is not None:
            _check_laws(laws, f"{where}: laws")
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

    def lock(self) -> Lock:
        """The run dir's writers' lock (:class:`mutune.files.Lock`): whoever writes best.yaml,
        trials.csv or the laws' files reads what is on disk and writes its merge under it."""
        return Lock(self.path / ".rundir.lock")

    def load(self) -> tuple[Spec, Best]:
        """The proxy spec (config.yaml) and best.yaml of a finished search."""
        self._exists()
        if not self.best_path.is_file():
            raise SpecError(
                str(self.best_path), "not found; is this a finished `mutune search` run directory?"
            )
        spec, best = self.spec(), self.best()
        assert best is not None
        needed = hparams_used(spec.model.family, spec.train.optimizer, spec.model.parametrization)
        given = read_yaml(self.best_path, "best.yaml")["hparams"]
        missing = [n for n in needed if n not in given]
        if missing:
            raise SpecError(
                f"{self.best_path}: hparams.{missing[0]}",
                f"missing ({len(missing)} of the {len(needed)} hyperparameters this run reads: "
                f"{', '.join(missing)}); the search writes every one, and a missing one would silently "
                "train at the spec's default. Restore best.yaml, or run the search again",
            )
        return spec, best

    def spec(self) -> Spec:
        """The resolved spec the search ran (config.yaml); a damaged one names the file and the key."""
        self._exists()
        if not self.config_path.is_file():
            raise SpecError(str(self.config_path), "not found; is this a `mutune search` run directory?")
        data = read_yaml(self.config_path, "run dir config")
        try:
            return spec_from_dict(data)
        except SpecError as e:
            raise SpecError(f"{self.config_path}: {e.key}", f"{e.message} (the file is damaged?)") from None

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
