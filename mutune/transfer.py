"""The wide run: the proxy's spec at a new width, with best.yaml's hyperparameters unchanged.

:mod:`mutune.planning` builds and costs the target (``plan``); this module trains it, in this
process or under torchrun, and leaves the plan, config, metrics, checkpoints and result in
``<run_dir>/target-<key>/``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from . import data, flops, memory, trackers
from .config import PROVENANCE_TAGS, Best, RunDir, Spec, SpecError
from .device import resolve_device, threads_for
from .errors import arg
from .events import SILENT, Events
from .files import atomic_write
from .planning import DEFAULT_GPU_GIB, Plan, multipliers_of, plan  # noqa: F401 (part of transfer's API)
from .train import RunResult, has_checkpoint, read_result, train
from .train.checkpoint import FolderLock


@dataclass
class TransferResult:
    plan: Plan
    result: RunResult | None  # None for a dry run


def transfer(
    run_dir: str | Path | RunDir | None,
    to: list[str] | tuple[str, ...] = (),
    *,
    dry_run: bool = False,
    smoke: bool = False,
    resume: bool = False,
    force: bool = False,
    events: Events = SILENT,
    nproc: int = 1,
    gpu_gib: float | None = None,
    no_laws: bool = False,
    proxy: Spec | None = None,
    best: Best | None = None,
) -> TransferResult:
    """Plan the target run and, unless ``dry_run``, train it into ``<run_dir>/target-<key>/``.
    With ``dry_run``, ``run_dir`` may be a spec file not searched yet (its search's cost is planned).

    ``resume`` continues the target's last checkpoint (a finished target is returned as it is);
    without it, a folder that already holds a run is refused rather than overwritten. ``nproc``
    and ``gpu_gib`` size the plan's per-GPU memory (under torchrun, the launch's world size).
    With ``tracker.backend`` set, the run is also a run in that experiment tracker. ``proxy`` and
    ``best``: the search's own spec and winner, handed over in-process (nothing is read back).
    """
    nproc = int(os.environ.get("WORLD_SIZE", nproc))
    p = plan(
        run_dir,
        to,
        smoke=smoke,
        force=force,
        nproc=nproc,
        gpu_gib=gpu_gib,
        dry_run=dry_run,
        no_laws=no_laws,
        proxy=proxy,
        best=best,
    )
    world_main = int(os.environ.get("RANK", "0")) == 0
    if world_main:
        events.planned(p)
    if dry_run:
        return TransferResult(plan=p, result=None)
    trackers.check(p.spec.tracker.backend)
    data.load(p.spec.data, min_len=p.spec.model.seq_len + 1)  # fail on missing data before writing anything
    if p.spec.train.memory_check:  # the plan's own estimate for this process, before anything is allocated
        world = int(os.environ.get("WORLD_SIZE", "1"))
        memory.check(
            flops.per_gpu(p.cost.memory, world, p.spec.train.parallel).total,
            resolve_device(p.spec.train.device),
            what=f"the width-{p.spec.model.width} target"
            + (f" ({p.spec.train.parallel}, {world} processes)" if world > 1 else ""),
            force=arg("force", True),
        )
    # a finished target, resumed, is read back (train checks it was this spec's): no record is rewritten
    finished = resume and _finished(p)
    # one writer per target folder: a second transfer (or search) into it is refused while this one trains
    with FolderLock(p.target_dir) if world_main else contextlib.nullcontext():
        if world_main and not finished:
            plan_doc = yaml.safe_dump(p.to_dict(), sort_keys=False, allow_unicode=True)
            atomic_write(p.target_dir / "plan.yaml", lambda f: f.write_text(plan_doc, encoding="utf-8"))
            spec_doc = yaml.safe_dump(p.spec.to_dict(), sort_keys=False, allow_unicode=True)
            atomic_write(p.target_dir / "config.yaml", lambda f: f.write_text(spec_doc, encoding="utf-8"))
        run = _track_target(p) if world_main and not finished else None
        on_log, on_eval = trackers.attach(run, lambda log: events.step(None, log), None)
        try:
            result = train(
                p.spec, p.hparams, out_dir=p.target_dir, resume=resume, on_log=on_log, on_eval=on_eval
            )
        except BaseException as e:
            if run is not None:
                run.finish({}, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        if run is not None:
            run.finish(result.summary(), "FAILED" if result.diverged else "FINISHED")
        if world_main and not finished:
            _record_transfer(p)
    return TransferResult(plan=p, result=result)


def _finished(p: Plan) -> bool:
    """Whether the plan's target folder holds a run that reached its last step."""
    path = p.target_dir / "result.yaml"
    return path.is_file() and int(read_result(path).get("steps") or 0) >= p.spec.train.steps


def _record_transfer(p: Plan) -> None:
    """result.yaml gets what best.yaml said and what the target trained with (after the laws)."""
    path = p.target_dir / "result.yaml"
    if not path.is_file():
        return
    doc = yaml.safe_load(path.read_text()) or {}
    doc["transfer"] = {
        "transferred_hparams": asdict(p.transferred_hparams or p.hparams),
        "adjusted_hparams": asdict(p.hparams),
        "adjustments": p.adjustments,
    }
    atomic_write(
        path,
        lambda f: f.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"),
    )


def _track_target(p: Plan) -> trackers.TrackedRun | None:
    """The target as a run of the experiment tracker: the hparams, its shape and the search it came from."""
    tracking = trackers.Tracking.from_spec(p.spec.tracker, p.run_dir, p.spec.name, group=p.run_dir.name)
    if tracking is None:
        return None
    t, m = p.spec.train, p.spec.model
    params = {**asdict(p.hparams), "width": m.width, "depth": m.depth, "steps": t.steps}
    params.update(batch_size=t.batch_size, nproc=p.nproc, parallel=t.parallel)
    prov = {f"mutune.best.{k}": p.provenance[k] for k in PROVENANCE_TAGS if k in p.provenance}
    prov.update(
        {"mutune.run_dir": p.run_dir, "mutune.target": p.target_dir.name, "mutune.to": " ".join(p.overrides)}
    )
    return tracking.start(p.target_dir.name, "target", params, prov)


def launch_distributed(
    run_dir: str | Path | None,
    to: list[str] | tuple[str, ...],
    nproc: int,
    *,
    resume: bool = False,
    force: bool = False,
    smoke: bool = False,
    no_laws: bool = False,
) -> int:
    """Run this transfer under torchrun with ``nproc`` processes on this machine; returns its exit code.

    Each process trains on its slice of the global batch with DDP (NCCL on GPUs, one per process;
    gloo on CPU). For several machines, call torchrun yourself (see docs/recipes.md):
    ``torchrun --nnodes N --node-rank R --rdzv-endpoint HOST:29500 --nproc-per-node G -m mutune transfer ...``
    """
    run_dir = RunDir.latest().path if run_dir is None else Path(run_dir)
    # user errors surface here, once, not in every rank
    p = plan(run_dir, to, smoke=smoke, force=force, no_laws=no_laws, nproc=nproc)
    if p.spec.train.batch_size % nproc:
        raise SpecError(
            "train.batch_size", f"{p.spec.train.batch_size} is not divisible by {arg('nproc')} {nproc}"
        )
    if not resume and has_checkpoint(p.target_dir):  # say it once here, not from every rank
        raise SpecError(
            str(p.target_dir),
            f"already holds a run; pass {arg('resume', True)} to continue it, or remove the folder",
        )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "mutune",
        "transfer",
        str(run_dir),
    ]
    for token in to:
        cmd += ["--to", token]
    flags = (("--resume", resume), ("--force", force), ("--smoke", smoke), ("--no-laws", no_laws))
    cmd += [flag for flag, on in flags if on]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_for(p.spec.train.threads, nproc)))  # each rank's share
    return subprocess.call(cmd, env=env)


from . import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.X(...) calls X.X(...)
