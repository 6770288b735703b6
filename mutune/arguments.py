"""The jobs' arguments, checked without the training stack: what a command can refuse before torch loads.

Each job (the search, a transfer, the coord check, a sweep, ``inspect``) checks its arguments here
first, and the command line calls the same function before it imports the job, so a typo answers in
a fraction of a second with one line (the 1.3 s of ``import torch`` and more otherwise), and a Python
caller gets the same error from the job itself. What can be known only by building the model (its
FLOPs for a budget, its memory, a factory model µP cannot handle) is checked by the job, after.
Errors name the Python argument (``run_dir``); the command line prints its option (``--run-dir``).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import config
from .config import Best, RunDir, Spec, SpecError
from .config import axes as spec_axes
from .config.meaning import flatten
from .errors import arg
from .mup.axes import AXES, Axis
from .mup.parametrizations import controls_of
from .mup.parametrizations import get as get_parametrization

DEFAULT_MULTS = (1, 2, 4, 8, 16)  # the coord check's widths, × base_width (mutune.checks)


def positive(name: str, value: int | float | None) -> None:
    """A count or limit that must be above zero (``workers``, ``seeds``, ``nproc``)."""
    if value is not None and not value > 0:
        raise SpecError(
            name, f"must be >= 1, got {value}" if isinstance(value, int) else f"must be > 0, got {value}"
        )


def corpus(spec: Spec) -> None:
    """The spec's corpus is where it says (a missing path, a token folder without its two files); what
    is in the files is checked when they are read (:func:`mutune.data.load`)."""
    d = spec.data
    if d.corpus == "stdlib" or d.path is None:
        return
    p = Path(d.path).expanduser()
    if not p.exists():
        raise SpecError("data.path", f"file not found: {p}")
    if d.corpus == "tokens" and p.is_dir():
        for name in ("train.bin", "val.bin"):
            if not (p / name).is_file():
                raise SpecError("data.path", f"token folder {p} has no {name}")


def factory(spec: Spec) -> None:
    """A factory model's module is there: its file, or an importable top-level package (found, not
    imported; importing it runs the user's code, torch and all, when the model is built)."""
    path = getattr(spec.model, "factory", None)
    if spec.model.family != "factory" or not path:
        return
    module = path.rpartition(":")[0]
    if module.endswith(".py"):
        file = Path(module).expanduser()
        if not file.is_file():
            raise SpecError("model.factory", f"file not found: {file.resolve()}")
        return
    top = module.split(".")[0]
    if (
        top not in sys.modules
        and importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path]) is None
    ):
        raise SpecError(
            "model.factory",
            f"cannot import module '{module}' (no module named '{top}'); is it installed or in this folder?",
        )


def tracker(spec: Spec) -> None:
    """The experiment tracker's library is installed (found, not imported)."""
    from .trackers import check  # torch-free: it finds the library without importing it

    check(spec.tracker.backend)


def run_dir(path: str | Path | None) -> None:
    """A run dir to write into is a folder (or is not there yet)."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise SpecError("run_dir", f"{path} is a file, not a folder")


def search(spec: Spec, *, workers: int = 1, where: str | Path | None = None) -> None:
    """A search's arguments and spec, as far as they are known without building the model."""
    positive("workers", workers)
    run_dir(where)
    tracker(spec)
    corpus(spec)
    factory(spec)


def proxy_of(
    path: str | Path | RunDir | None, *, dry_run: bool = False, smoke: bool = False
) -> tuple[RunDir, Spec, Best | None]:
    """The proxy a transfer starts from: a run dir's config.yaml and best.yaml (the one used last under ./runs
    without ``path``), or, planning only, a spec file not searched yet (no best.yaml: None)."""
    run = path if isinstance(path, RunDir) else RunDir.latest() if path is None else RunDir(Path(path))
    if run.path.is_file():
        if not dry_run:
            raise SpecError(
                str(run.path),
                "is a spec, not a search run directory: search it first, or plan it with "
                f"{arg('dry_run', True)}",
            )
        return run, config.load_spec(run.path, smoke=smoke), None
    return run, *run.load()


def provenance(proxy: Spec, best: Best, best_path: Path, force: bool) -> list[str]:
    """Refuse hyperparameters tuned for another model family, base (width, depth, experts), or
    parametrization.

    They would mean something else here (the µP multipliers are relative to the base width the
    search used). ``force`` overrides; what was forced is returned, to be recorded in the plan.
    """
    mismatches = []
    for key, mine in (
        ("model_family", proxy.model.family),
        ("parametrization", proxy.model.parametrization),
        *spec_axes.bases(proxy).items(),  # base_width, base_depth, base_experts
        ("depth_alpha", proxy.model.depth_alpha),
    ):
        theirs = best.provenance.get(key)
        if theirs is not None and theirs != mine:
            mismatches.append(f"{key}: best.yaml has {theirs!r}, the spec has {mine!r}")
    covered = {
        "model.family",
        "model.base_width",
        "model.parametrization",
        "model.base_depth",
        "model.depth_alpha",
    }
    recorded = best.provenance.get("proxy") or {}  # every other fixed key (the optimizer, tied embeddings...)
    mine_all = flatten(proxy.to_dict(), frozenset(recorded))
    for key, theirs in recorded.items():
        if key in mine_all and mine_all[key] != theirs and key not in covered:
            mismatches.append(f"{key}: best.yaml has {theirs!r}, the spec has {mine_all[key]!r}")
    if mismatches and not force:
        raise SpecError(
            str(best_path),
            f"was tuned for a different model ({'; '.join(mismatches)}); pass {arg('force', True)} to "
            "apply it anyway",
        )
    return [f"forced: {m}" for m in mismatches]


def transfer(
    path: str | Path | None,
    to: Sequence[str] = (),
    *,
    dry_run: bool = False,
    smoke: bool = False,
    force: bool = False,
    nproc: int = 1,
) -> None:
    """A transfer's arguments: the run dir (or spec) and its best.yaml, and the target ``to`` names,
    derived as the transfer will derive it (a key it refuses is refused here, named)."""
    positive("nproc", nproc)
    run, proxy, best = proxy_of(path, dry_run=dry_run, smoke=smoke)
    if best is not None:
        provenance(proxy, best, run.best_path, force)
    changes = config.target.changes_for(proxy, to)
    target = config.derive(proxy, changes, smoke_run=smoke, force=force)
    factory(target.spec)
    if not dry_run:
        tracker(target.spec)
        corpus(target.spec)


def export(path: str | Path | None, to: Sequence[str] = (), *, force: bool = False) -> None:
    """An export's arguments: a searched run dir and its best.yaml, and the target ``to`` names,
    checked as a planned transfer's (an export needs neither the data nor a tracker)."""
    if path is not None and Path(path).is_file():
        raise SpecError(
            str(path), "is a spec, not a search run directory: search it first, then export the run"
        )
    transfer(path, to, dry_run=True, force=force)


UNCHECKABLE = ("attention",)  # what a coord check may be allowed to leave unchecked (allow_unchecked)


def coord_check(
    spec: Spec,
    *,
    compare: str | None = None,
    seeds: int = 3,
    steps: int = 5,
    widths: Sequence[int] | None = None,
    mults: Sequence[int] = DEFAULT_MULTS,
    depths: Sequence[int] | None = None,
    allow_unchecked: Sequence[str] = (),
    along: str | None = None,
    sizes: Sequence[int] | None = None,
) -> tuple[list[int], str | None, list[int] | None]:
    """The coord check's widths, the axis it runs along instead of width (``depths`` is
    ``along="depth"``) and its sizes there (sorted), or a refusal naming the argument: fewer than
    two widths, fewer than two steps or seeds, a control for a spec that is itself the control, an
    axis that is not one, sizes a check along it cannot use (odd depths; where the spec's family
    has no such axis, or its optimizer no rule along it, as a target there would be refused),
    something to leave unchecked that is not :data:`UNCHECKABLE`."""
    for what in allow_unchecked:
        if what not in UNCHECKABLE:
            raise SpecError("allow_unchecked", f"expected one of {', '.join(UNCHECKABLE)}, got {what!r}")
    if depths is not None:
        along, sizes = "depth", depths
    if along is not None:
        if along not in AXES or along == "width":
            raise SpecError(
                "along", f"expected one of {', '.join(a for a in AXES if a != 'width')}, got {along!r}"
            )
        sizes = check_sizes(spec, AXES[along], list(sizes or []))
        widths = [spec.model.base_width]
    widths = sorted(set(widths or [spec.model.base_width * k for k in mults]))
    if len(widths) < 2 and along is None:
        raise SpecError("widths", "a slope needs at least two widths")
    if steps < 2:
        raise SpecError("steps", "needs at least 2 steps (t = 0 is the model at init)")
    if seeds < 1:
        raise SpecError("seeds", f"must be >= 1, got {seeds}")
    if compare is not None:
        mine = get_parametrization(spec.model.parametrization)
        controls = [p.name for p in controls_of(mine)]
        if mine.coord_check == "control":
            raise SpecError(
                "compare", f"the spec is already {mine.label}, a control; compare a spec it controls for"
            )
        if compare not in controls:
            raise SpecError(
                "compare", f"expected one of {', '.join(controls)} (a negative control), got {compare!r}"
            )
    corpus(spec)
    factory(spec)
    return widths, along, (list(sizes) if along is not None else None)


def sizes_arg(axis: Axis) -> str:
    """The argument (and, as ``--<it>``, the option) that lists a check's sizes along ``axis``:
    ``depths``, ``experts``."""
    return axis.name if axis.name.endswith("s") else f"{axis.name}s"


def check_sizes(spec: Spec, axis: Axis, sizes: list[int]) -> list[int]:
    """The sizes of a check across ``axis``, sorted; refused (naming ``depths``, ``experts``) where a
    spec at them is (a family without the axis, a rule along it the optimizer does not have, as a
    target there would be). Depths must be even (a block half way and a last one)."""
    sizes, name = sorted(set(sizes)), sizes_arg(axis)
    if axis.found_by == "blocks" and (len(sizes) < 2 or any(d < 2 or d % 2 for d in sizes)):
        raise SpecError(
            name, f"needs at least two even depths (a block half way and a last one), got {sizes}"
        )
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise SpecError(name, f"needs at least two sizes, got {sizes}")
    try:
        # the check's point at each size (checks.axes.at_point), the axis's rules pinned to the spec's base
        for n in sizes:
            edit = {"model.width": spec.model.base_width, axis.key: n}
            spec.edit(edit | {axis.base_key: spec_axes.base(spec, axis)})
    except SpecError as e:
        raise SpecError(name, f"{e.key}: {e.message}") from None
    return sizes


def inspect(spec: Spec, to: Sequence[str] = ()) -> None:
    """``inspect``'s target, derived as the transfer would (a key it refuses, named)."""
    factory(spec)
    if to:
        config.derive(spec, list(to))
