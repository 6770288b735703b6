"""Slurm: the search's workers as a job array, the target as a multi-node job, through ``submitit``.

A team's machines are a Slurm cluster. ``mutune search SPEC --workers N --launcher slurm`` submits N
array tasks, each running the same search on the study (its storage shared: the journal file in the
run directory on a shared file system, or ``search.storage: postgresql://...``); they cooperate as
the processes of :mod:`mutune.study.workers` do (trial k draws from ``(seed, k)``, the budget is
counted before each trial, a dead worker's trial is failed and re-run by the others), so the study
finishes on the tasks left when one is killed. ``mutune transfer ... --launcher slurm --nodes K
--gpus-per-node G`` submits the target as one job of K×G tasks, each a rank of the run that
``torchrun`` would start (``submitit``'s ``TorchDistributedEnvironment`` gives each its RANK,
WORLD_SIZE and the master address).

Everything a user can get wrong is checked before anything is submitted (the spec, the data, the
run directory, the target's plan), so it is one line on the login node, not a failed job.
``--slurm key=value`` sets a submitit parameter: ``partition``, ``account``, ``qos``,
``constraint``... (Slurm's, as ``slurm_<key>``), ``timeout_min``, ``mem_gb``, ``cpus_per_task`` (as
they are); ``cluster=local`` runs the same jobs as local processes (submitit's local executor, what
the tests use), ``cluster=debug`` in this process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config
from .config import RunDir, Spec, SpecError
from .config.typed import parse_override

# submitit's own parameter names (AutoExecutor); any other key is Slurm's, passed as slurm_<key>
GENERIC = {
    "timeout_min",
    "mem_gb",
    "cpus_per_task",
    "gpus_per_node",
    "nodes",
    "tasks_per_node",
    "name",
    "stderr_to_stdout",
}
CLUSTERS = ("slurm", "local", "debug")
DEFAULT_TIMEOUT_MIN = 24 * 60  # submitit's own default is 5 minutes, which would end a search mid-trial
INSTALL = "pip install 'mutune[slurm]' (submitit)"


@dataclass
class Submitted:
    """What was submitted: the jobs and where their logs go."""

    jobs: list[Any]
    folder: Path
    cluster: str

    @property
    def ids(self) -> list[str]:
        return [str(j.job_id) for j in self.jobs]

    def follow(self) -> list[str]:
        """How to follow the jobs, as commands a user can paste."""
        first = self.ids[0].split("_")[0]
        logs = f"tail -f {self.folder}/{self.ids[0]}_0_log.out"
        if self.cluster == "slurm":
            return [f"squeue -j {first}", logs, f"sacct -j {first}", f"scancel {first}  (to stop)"]
        return [logs]


def submitit_module() -> Any:
    """submitit, or the one-line error a missing extra deserves (before anything is written)."""
    try:
        import submitit
    except ImportError:
        raise SpecError("--launcher", f"slurm needs submitit, which is not installed: {INSTALL}") from None
    return submitit


def parse_options(tokens: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--slurm key=value`` tokens as submitit parameters (values typed as YAML: 60 is an int)."""
    out: dict[str, Any] = {}
    for token in tokens:
        try:
            key, value = parse_override(token)
        except SpecError:
            raise SpecError("--slurm", f"expected key=value (e.g. partition=gpu), got {token!r}") from None
        if key == "cluster" and value not in CLUSTERS:
            raise SpecError("--slurm cluster", f"expected one of {', '.join(CLUSTERS)}, got {value!r}")
        out[key] = value
    return out


def executor(folder: Path, options: dict[str, Any], **resources: Any) -> tuple[Any, str]:
    """A submitit executor writing its logs to ``folder``, with ``resources`` and the user's options;
    refuses to fall back to local processes where there is no Slurm (unless asked: cluster=local)."""
    submitit = submitit_module()
    options = dict(options)
    cluster = options.pop("cluster", None)
    if cluster in (None, "slurm") and submitit.SlurmExecutor.affinity() < 0:
        raise SpecError(
            "--launcher",
            "slurm: no sbatch on this machine; run from a Slurm login node (--slurm cluster=local runs the "
            "same jobs as local processes)",
        )
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster or "slurm")
    params = {k if k in GENERIC or k.startswith("slurm_") else f"slurm_{k}": v for k, v in options.items()}
    try:
        ex.update_parameters(**{"timeout_min": DEFAULT_TIMEOUT_MIN, **resources, **params})
    except (ValueError, TypeError, NameError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError("--slurm", first) from None
    return ex, cluster or "slurm"


# ---------------------------------------------------------------------------------------------
# The search


def submit_search(
    spec: Spec,
    run_dir: Path,
    workers: int,
    options: dict[str, Any],
    *,
    skip_check: bool = False,
    argv: list[str] | None = None,
) -> Submitted:
    """Check what the search will need (as :func:`mutune.search.search` does before its first trial),
    then submit ``workers`` array tasks, each running the search on the shared study."""
    from . import budget, data, models

    if workers < 1:
        raise SpecError("--workers", f"must be >= 1, got {workers}")
    submitit_module()
    data.load(spec.data, min_len=spec.model.seq_len + 1)
    models.validate(spec, spec.hparams, data.vocab_size(spec.data))
    budget.make_plan(spec)
    run_dir = run_dir.resolve()  # a job may start in another folder
    RunDir(run_dir).claim(spec)
    folder = run_dir / "slurm"
    ex, cluster = executor(folder, options, name=f"mutune-{spec.name}", tasks_per_node=1, nodes=1)
    args = [spec.to_dict()] * workers, [str(run_dir)] * workers, list(range(workers))
    rest = [list(argv or sys.argv)] * workers, [skip_check] * workers
    jobs = _submitted(lambda: ex.map_array(search_worker, *args, *rest))
    return Submitted(jobs, folder, cluster)


def _submitted(submit: Any) -> Any:
    """The jobs, or sbatch's refusal (an unknown partition, a time over the limit) as one line."""
    try:
        return submit()
    except Exception as e:  # noqa: BLE001 - submitit wraps sbatch's message in its own error types
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise SpecError(
            "--slurm", f"the job was not submitted: {lines[-1] if lines else type(e).__name__}"
        ) from None


def search_worker(
    spec_dict: dict, run_dir: str, rank: int, argv: list[str], skip_check: bool = False
) -> dict[str, Any]:
    """One array task: the search on the shared study, until it holds its trials (no target: the
    target is its own job, ``mutune transfer --launcher slurm``)."""
    import torch

    from . import search as search_mod

    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
    if cpus:
        torch.set_num_threads(cpus)
    spec = config.spec_from_dict(spec_dict)
    res = search_mod.search(spec, run_dir=Path(run_dir), transfer=False, skip_check=skip_check, argv=argv)
    return {
        "worker": rank,
        "n_finished": res.n_finished,
        "best_trial": res.best.provenance.get("trial_number"),
    }


# ---------------------------------------------------------------------------------------------
# The target


def submit_transfer(
    run_dir: Path,
    to: list[str],
    *,
    nodes: int,
    gpus_per_node: int,
    nproc: int,
    options: dict[str, Any],
    resume: bool = False,
    force: bool = False,
    smoke: bool = False,
    no_laws: bool = False,
) -> Submitted:
    """Plan the target here (its errors are one line on the login node), then submit it as one job of
    ``nodes`` × (``gpus_per_node``, or ``nproc`` without GPUs) tasks, each a rank of the run."""
    from .planning import plan
    from .train import has_checkpoint

    if nodes < 1:
        raise SpecError("--nodes", f"must be >= 1, got {nodes}")
    if gpus_per_node < 0:
        raise SpecError("--gpus-per-node", f"must be >= 0, got {gpus_per_node}")
    submitit_module()
    per_node = gpus_per_node or nproc
    world = nodes * per_node
    run_dir = run_dir.resolve()
    p = plan(run_dir, to, smoke=smoke, force=force, no_laws=no_laws, nproc=world)
    if p.spec.train.batch_size % world:
        raise SpecError(
            "train.batch_size",
            f"{p.spec.train.batch_size} is not divisible by the {world} ranks (--nodes x per node)",
        )
    if not resume and has_checkpoint(p.target_dir):
        raise SpecError(
            str(p.target_dir), "already holds a run; pass --resume to continue it, or remove the folder"
        )
    folder = p.target_dir.parent / f"{p.target_dir.name}-slurm"
    resources = {"nodes": nodes, "tasks_per_node": per_node, "name": f"mutune-{p.target_dir.name}"}
    if gpus_per_node:
        resources["gpus_per_node"] = gpus_per_node
    ex, cluster = executor(folder, options, **resources)
    flags = {"resume": resume, "force": force, "smoke": smoke, "no_laws": no_laws}
    job = _submitted(lambda: ex.submit(transfer_rank, str(run_dir), list(to), flags))
    return Submitted([job], folder, cluster)


def transfer_rank(run_dir: str, to: list[str], flags: dict[str, bool]) -> dict[str, Any] | None:
    """One rank of the target: the distributed environment from Slurm's (one GPU per local rank,
    selected by LOCAL_RANK as under torchrun), then the transfer."""
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment().export(
        set_cuda_visible_devices=False, overwrite=True
    )
    from . import transfer as transfer_mod

    res = transfer_mod.transfer(run_dir, to, nproc=env.world_size, **flags)
    r = res.result
    if env.rank != 0 or r is None:
        return None
    return {"target_dir": str(res.plan.target_dir), "val_loss": r.final_val_loss, "diverged": r.diverged}


def wait(sub: Submitted, say: Any = None) -> int:
    """Wait for every job; each one that failed is said in one line (its error's last line). Returns
    how many failed: a search's study finishes on the workers left, so one lost worker is not a failure."""
    failed = 0
    for job in sub.jobs:
        try:
            job.results()
        except Exception as e:  # noqa: BLE001 - a job's own error, reported, not raised
            failed += 1
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            msg = f"job {job.job_id} failed: {lines[-1] if lines else type(e).__name__}"
            if say is None:
                print(f"warning: {msg}", file=sys.stderr)
            else:
                say(msg)
    return failed
