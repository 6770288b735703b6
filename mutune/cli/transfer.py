"""``mutune transfer``: train the target with the search's winning hyperparameters, or plan it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from .. import arguments, config, files
from ..errors import SpecError
from ..events import Events
from .app import ThreadsOpt, app, threads_override
from .console import err, log_line, out
from .progress import Display
from .signals import interruptible
from .target import print_target, submitted


@app.command()
def transfer(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="a search run dir (default: the one under ./runs used last), or with --dry-run a spec not "
            "searched yet",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="more target keys, as --to (e.g. train.parallel=fsdp)",
            show_default=False,
        ),
    ] = None,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="KEY=VALUE",
            help="KEY=VALUE for the target, e.g. width=1024 (repeatable); default: the spec's target",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="plan only (params, FLOPs, memory); allocate nothing")
    ] = False,
    save_plan: Annotated[
        Path | None,
        typer.Option(
            "--save-plan",
            metavar="FILE",
            help="with --dry-run: also write the plan (plan.yaml's keys) to FILE",
        ),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny widths and few steps (CI)")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue the target's last checkpoint")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="apply a best.yaml tuned for another family/base width/parametrization"),
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", metavar="N", help="processes (GPUs) on this machine, via torchrun")
    ] = 1,
    gpu_memory: Annotated[
        float | None,
        typer.Option(
            "--gpu-memory", metavar="GIB", help="GPU memory the plan checks the run fits in [default: 80]"
        ),
    ] = None,
    tracker: Annotated[
        str | None,
        typer.Option("--tracker", metavar="NAME", help="tensorboard, mlflow or wandb (tracker.backend)"),
    ] = None,
    no_laws: Annotated[
        bool,
        typer.Option("--no-laws", help="copy the hparams literally: ignore best.yaml's fitted LR laws"),
    ] = False,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher", metavar="local|slurm", help="slurm: submit the target as a Slurm job (submitit)"
        ),
    ] = "local",
    nodes: Annotated[int, typer.Option("--nodes", metavar="K", help="with --launcher slurm: nodes")] = 1,
    gpus_per_node: Annotated[
        int, typer.Option("--gpus-per-node", metavar="G", help="with --launcher slurm: GPUs (ranks) per node")
    ] = 0,
    slurm_opts: Annotated[
        list[str] | None,
        typer.Option(
            "--slurm", metavar="KEY=VALUE", help="a submitit/Slurm parameter, e.g. partition=gpu (repeatable)"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="with --launcher slurm: wait for the job")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Train the target with the search's winning hyperparameters, unchanged across width.

    The plan gives parameters, FLOPs and memory, per GPU under DDP and FSDP with --nproc. A target
    at another train.steps or train.batch_size gets the LR law best.yaml holds (`mutune laws`).

    Example: mutune transfer runs/quickstart --to width=1024
    """
    if nproc < 1:
        raise SpecError("--nproc", f"must be >= 1, got {nproc}")
    if save_plan is not None and not dry_run:
        raise SpecError("--save-plan", "only with --dry-run (a target run writes plan.yaml in its folder)")
    if save_plan is not None and not save_plan.parent.is_dir():
        raise SpecError("--save-plan", f"folder {save_plan.parent} not found")
    if launcher not in ("local", "slurm"):
        raise SpecError("--launcher", f"expected local or slurm, got {launcher!r}")
    if launcher == "slurm":
        from .. import slurm

        slurm.submitit_module()  # a missing extra is one line, before the training stack loads
    if run_dir is not None and "=" in str(run_dir) and not run_dir.exists():
        overrides, run_dir = [str(run_dir), *(overrides or [])], None  # KEY=VALUE with the latest run
    to = [*(to or []), *(overrides or []), *([f"tracker.backend={tracker}"] if tracker else [])]
    to += threads_override(threads)
    if run_dir is None:
        run_dir = config.RunDir.latest().path
        log_line(f"using the latest run: {run_dir}")
    # the run dir, best.yaml and every --to key, as the transfer will read them, before torch loads
    arguments.transfer(run_dir, to, dry_run=dry_run, smoke=smoke, force=force, nproc=nproc)
    if launcher != "local" or slurm_opts or wait:
        flags = {"resume": resume, "force": force, "smoke": smoke, "no_laws": no_laws}
        raise typer.Exit(
            _slurm(run_dir, to, launcher, nodes, gpus_per_node, nproc, slurm_opts or [], wait, dry_run, flags)
        )
    from .. import transfer as transfer_mod

    if nproc > 1 and "WORLD_SIZE" not in os.environ and not dry_run:
        log_line(f"launching {nproc} processes with torchrun")
        with interruptible(Events(), run_dir, target=True):
            code = transfer_mod.launch_distributed(
                run_dir, to, nproc, resume=resume, force=force, smoke=smoke, no_laws=no_laws
            )
        raise typer.Exit(code)
    rank0 = os.environ.get("RANK", "0") == "0"
    display = Display() if rank0 else Events()
    with interruptible(display, run_dir, target=True, hint=rank0):
        res = transfer_mod.transfer(
            run_dir,
            to,
            dry_run=dry_run,
            smoke=smoke,
            resume=resume,
            force=force,
            events=display,
            nproc=nproc,
            gpu_gib=gpu_memory,
            no_laws=no_laws,
        )
    if save_plan is not None:
        plan_doc = yaml.safe_dump(res.plan.to_dict(), sort_keys=False, allow_unicode=True)
        files.atomic_write(save_plan, lambda f: f.write_text(plan_doc, encoding="utf-8"))
        log_line(f"plan -> {save_plan}")
    raise typer.Exit(print_target(res) if rank0 else 0)


def _slurm(
    run_dir: Path,
    to: list[str],
    launcher: str,
    nodes: int,
    gpus_per_node: int,
    nproc: int,
    opts: list[str],
    wait: bool,
    dry_run: bool,
    flags: dict[str, bool],
) -> int:
    """``--launcher slurm``: submit the target (K nodes x G ranks), say how to follow it, or wait for it."""
    from .. import slurm

    if launcher != "slurm":
        raise SpecError(
            "--launcher", f"--slurm and --wait go with --launcher slurm (got --launcher {launcher})"
        )
    if dry_run:
        raise SpecError("--dry-run", "plans here; drop --launcher slurm to plan, or --dry-run to submit")
    sub = slurm.submit_transfer(
        run_dir,
        to,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        nproc=nproc,
        options=slurm.parse_options(opts),
        **flags,
    )
    submitted(sub, f"the target ({nodes} node(s) x {gpus_per_node or nproc} rank(s))")
    if not wait:
        return 0
    if slurm.wait(sub, say=lambda m: err.print(f"[red]error:[/] {m}", highlight=False)):
        return 1
    ranks = sub.jobs[0].results()
    r = next((x for x in ranks if x), None)
    if r is None:
        return 1
    if r["diverged"]:
        err.print(f"[red]target diverged[/] (see {r['target_dir']})", highlight=False)
        return 1
    out.print(f"target val loss {r['val_loss']:.4f} -> {r['target_dir']}", highlight=False)
    return 0
