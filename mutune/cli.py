"""The ``mutune`` command line: thin Typer commands over the core functions, plus rendering.

Exit codes everywhere: 0 success; 1 a check failed or a run diverged; 2 a user error (bad
spec, bad argument, missing file), printed as one line naming the key or file; 130 interrupted.
Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from . import __version__, config, files
from .cli_render import (
    Display,
    SweepDisplay,
    err,
    fmt_secs,
    log_line,
    out,
    print_report,
    print_sweep,
    state,
)
from .cli_render import print_coord_check as _print_coord_check
from .errors import MutuneWarning, SearchFailed, SpecError
from .events import Events

if TYPE_CHECKING:
    from .transfer import TransferResult

# Each command imports what it runs (torch, Optuna, pandas) in its body, so that `mutune --help`,
# `show-config`, `init` and argument errors answer without loading the training stack (a test
# checks sys.modules after each).

HELP_NAMES = ["-h", "--help"]
app = typer.Typer(
    name="mutune",
    help="µTransfer made practical: tune hyperparameters on a narrow µP proxy, train the wide target with them "
    "unchanged.\n\nExample: mutune search configs/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_NAMES},
)


@contextlib.contextmanager
def _interruptible(display: Display, run_dir: Path | None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during a search or sweep: close the live display, say how to resume, exit 130."""
    try:
        yield
    except KeyboardInterrupt as e:
        display.close()
        _resume_hint(run_dir, e)
        raise typer.Exit(130) from None
    finally:
        display.close()


def _command_line(*extra: str) -> str:
    """The command as the user typed it (plus ``extra`` flags it lacks), quoted for pasting."""
    args = list(state.argv if state.argv is not None else sys.argv[1:])
    args += [a for a in extra if a not in args]
    return " ".join(shlex.quote(a) for a in ["mutune", *args])


def _resume_hint(run_dir: Path | None, exc: BaseException | None = None) -> None:
    """How to continue, with the command on a line of its own, unwrapped, so it can be pasted."""
    stopped = getattr(exc, "out_dir", None)  # a target (the search's own) stopped after its checkpoint
    if stopped is not None:
        what = f"stopped at step {exc.step} of {exc.steps}; the checkpoint is in {stopped}"
    else:
        what = f"finished trials are kept in {run_dir}" if run_dir else "finished work is kept"
    err.print(f"interrupted; {what}. Resume with:", highlight=False, soft_wrap=True)
    err.print(f"  {_command_line()}", highlight=False, markup=False, soft_wrap=True)


def _transfer_interrupted(display: Events, run_dir: Path | None, exc: BaseException | None = None) -> None:
    """A target stopped by Ctrl-C or SIGTERM: where its checkpoint is, and the command that resumes it."""
    stopped = getattr(exc, "out_dir", None)  # the trainer stopped after writing a checkpoint
    if stopped is not None:
        what = f"stopped at step {exc.step} of {exc.steps}; the checkpoint is in {stopped}"
    else:
        what = f"the last checkpoint is kept in {getattr(display, 'target_dir', None) or run_dir}"
    err.print(f"interrupted; {what}. Resume with:", highlight=False, soft_wrap=True)
    err.print(f"  {_command_line('--resume')}", highlight=False, markup=False, soft_wrap=True)


def _print_target(res: TransferResult) -> int:
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


# ---------------------------------------------------------------------------------------------
# Commands

OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="dotted KEY=VALUE overrides, e.g. train.steps=50 search.n_trials=8",
        show_default=False,
    ),
]


@app.command()
def search(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", metavar="DIR", help="default: runs/<name>")
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny widths, few steps and trials (CI)")] = False,
    no_transfer: Annotated[
        bool, typer.Option("--no-transfer", help="do not train the target afterwards")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", help="parallel worker processes on this machine")
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", metavar="URL", help="Optuna storage URL (e.g. postgresql://...) to share a study"
        ),
    ] = None,
    skip_check: Annotated[
        bool,
        typer.Option("--skip-check", help="search even if the coord check fails (recorded in best.yaml)"),
    ] = False,
    tracker: Annotated[
        str | None,
        typer.Option(
            "--tracker", metavar="NAME", help="log trials to tensorboard, mlflow or wandb (tracker.backend)"
        ),
    ] = None,
) -> None:
    """Search hyperparameters on the µP proxy, write best.yaml, then train the target.

    A fast coord check runs first and stops a µP model that is not µP. Re-running the same command
    resumes the study.

    Example: mutune search configs/quickstart.yaml search.n_trials=8
    """
    extra = [f"search.storage={storage}"] if storage else []
    extra += [f"tracker.backend={tracker}"] if tracker else []
    spec = config.load_spec(config_path, [*(overrides or []), *extra], smoke=smoke)
    from . import search as search_mod  # the training stack, once the spec is known to be good

    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = Display()
    with _interruptible(display, where):
        res = search_mod.search(
            spec,
            run_dir=where,
            smoke=False,  # (already applied by load_spec, under the explicit overrides)
            transfer=not no_transfer,
            workers=workers,
            skip_check=skip_check,
            events=display,
        )
    prov = res.best.provenance
    note = display.summary(res.n_finished)
    if note:
        log_line(note)
    running = f" ({res.n_running} still running in another process)" if res.n_running else ""
    lad = prov.get("ladder") or {}
    via = (
        f" (ladder: {lad['winner_loss']:.4f} at width {lad['decided_at_width']})"
        if lad.get("winner_loss")
        else ""
    )
    out.print(
        f"best trial #{prov['trial_number']} loss {prov['loss']:.4f}{via} of {res.n_finished} finished{running} -> "
        f"{res.run_dir / 'best.yaml'}",
        highlight=False,
    )
    if res.target is not None:
        raise typer.Exit(_print_target(res.target))


@app.command()
def transfer(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="a search run dir (default: the latest under ./runs), or with --dry-run a spec not searched yet",
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
    from . import transfer as transfer_mod

    if run_dir is not None and "=" in str(run_dir) and not run_dir.exists():
        overrides, run_dir = [str(run_dir), *(overrides or [])], None  # KEY=VALUE with the latest run
    to = [*(to or []), *(overrides or []), *([f"tracker.backend={tracker}"] if tracker else [])]
    if run_dir is None:
        run_dir = transfer_mod.latest_run()
        log_line(f"using the latest run: {run_dir}")
    if nproc > 1 and "WORLD_SIZE" not in os.environ and not dry_run:
        log_line(f"launching {nproc} processes with torchrun")
        try:
            code = transfer_mod.launch_distributed(
                run_dir, to, nproc, resume=resume, force=force, smoke=smoke, no_laws=no_laws
            )
        except KeyboardInterrupt:
            _transfer_interrupted(Events(), run_dir)
            raise typer.Exit(130) from None
        raise typer.Exit(code)
    rank0 = os.environ.get("RANK", "0") == "0"
    display = Display() if rank0 else Events()
    try:
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
    except KeyboardInterrupt as e:
        if isinstance(display, Display):
            display.close()
        if rank0:
            _transfer_interrupted(display, run_dir, e)
        raise typer.Exit(130) from None
    finally:
        if isinstance(display, Display):
            display.close()
    if save_plan is not None:
        plan_doc = yaml.safe_dump(res.plan.to_dict(), sort_keys=False)
        files.atomic_write(save_plan, lambda f: f.write_text(plan_doc))
        log_line(f"plan -> {save_plan}")
    raise typer.Exit(_print_target(res) if rank0 else 0)


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    md = "md"


@app.command()
def report(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="a search run dir (default: the latest under ./runs), or with --dry-run a spec not searched yet",
        ),
    ] = None,
    fmt: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            "-f",
            metavar="table|csv|json|md",
            help="table for people; csv, json or md for machines and CI",
        ),
    ] = ReportFormat.table,
    top: Annotated[
        int, typer.Option("--top", min=1, metavar="N", help="how many of the best trials to list")
    ] = 10,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="where the PNGs and report.json go; default RUN_DIR/report"
        ),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNGs")] = False,
) -> None:
    """Summarise a search: top trials, winning HPs, importances, tuning cost, PNGs.

    Writes history.png, params.png, curves.png and report.json under RUN_DIR/report/.

    Example: mutune report runs/quickstart --format md >> $GITHUB_STEP_SUMMARY
    """
    from . import report as report_mod
    from . import transfer as transfer_mod

    if run_dir is None:
        run_dir = transfer_mod.latest_run()
        log_line(f"using the latest run: {run_dir}")
    rep = report_mod.report(run_dir)
    dest = out_dir if out_dir is not None else rep.run_dir / report_mod.REPORT_DIR
    if not no_plots:
        report_mod.write_figures(rep, dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "report.json").write_text(report_mod.to_json(rep, top))
    if fmt is ReportFormat.table:
        print_report(rep, top)
    else:
        text = {
            ReportFormat.csv: report_mod.to_csv,
            ReportFormat.json: lambda r: report_mod.to_json(r, top) + "\n",
            ReportFormat.md: lambda r: report_mod.to_markdown(r, top),
        }[fmt](rep)
        sys.stdout.write(text)


class ModelChoice(str, Enum):
    gpt = "gpt"
    mlp = "mlp"
    factory = "factory"


@app.command()
def init(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="where to write the spec")] = Path(
        "mutune.yaml"
    ),
    model: Annotated[
        ModelChoice,
        typer.Option(
            "--model", "-m", metavar="gpt|mlp|factory", help="gpt, mlp, or factory (your own model)"
        ),
    ] = ModelChoice.gpt,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter spec: every key, its type, default and meaning.

    It validates and runs as written: mutune search PATH --smoke.

    Example: mutune init --model mlp my-mlp.yaml
    """
    from . import docs as docs_mod

    if path.exists() and not force:
        raise SpecError(str(path), "already exists; pick another path or pass --force")
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    text = docs_mod.starter_spec(model.value, name=name, filename=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    log_line(f"wrote {path}; next: mutune search {shlex.quote(str(path))} --smoke")


@app.command("show-config")
def show_config(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="show the --smoke variant")] = False,
) -> None:
    """Print the fully resolved spec (defaults and overrides filled in) as YAML.

    Keys that do not apply (a categorical range's bounds, another model family's keys) are left out.

    Example: mutune show-config configs/quickstart.yaml train.steps=50
    """
    import yaml

    spec = config.load_spec(config_path, overrides or [], smoke=smoke)
    sys.stdout.write(yaml.safe_dump(config.shown(spec), sort_keys=False, allow_unicode=True))


@app.command("coord-check")
def coord_check(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", metavar="DIR", help="results go to RUN_DIR/checks; default: runs/<name>"),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny shapes (base width 32)")] = False,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="sp", help="sp: also check the SP twin, the negative control"),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", metavar="LR", help="default: 0.01 (AdamW)")] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", metavar="N", help="seeds per width (default 3; 6 with --depths)")
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(
            "--depths",
            metavar="L1,L2,...",
            help="check across depth instead (even depths, at the base width): CompleteP keeps every slope flat",
        ),
    ] = None,
) -> None:
    """Check that activations keep their size as the model widens (µP), or deepens, with a verdict.

    Trains the model at base_width × 1, 2, 4, 8, 16 for a few steps and fits the slope of every
    layer's mean |x| against width; writes CSVs and a PNG to RUN_DIR/checks. With --depths, the
    same at the listed depths (slopes against depth; files coord_check_depth*). Exit 0 when the
    spec's model passes, 1 when it fails.

    Example: mutune coord-check configs/quickstart.yaml --compare sp
    """
    spec = config.load_spec(config_path, overrides or [], smoke=smoke)
    depth_list = _comma_list(depths, "--depths", int)
    from . import checks as checks_mod
    from . import search as search_mod

    out_dir = (run_dir or search_mod.default_run_dir(spec, smoke)) / "checks"
    res = checks_mod.coord_check(
        spec,
        compare=compare,
        lr=lr,
        seeds=seeds if seeds is not None else (checks_mod.DEPTH_SEEDS if depth_list else 3),
        out_dir=out_dir,
        depths=depth_list,
        prefix="coord_check_depth" if depth_list else "coord_check",
    )
    _print_coord_check(res)
    out.print(f"-> {res.files['slopes']}, {res.files['png']}", highlight=False)
    raise typer.Exit(0 if res.passed else 1)


@app.command()
def inspect(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to", help="KEY=VALUE for a target, e.g. width=1024 (repeatable); default: the spec's target"
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """How µP treats every parameter of the model: role, width dims, init, LR, weight decay, ε.

    At the spec's width and at a target width, with the forward multipliers and warnings; the
    values are what the optimizer's param groups hold. Allocates nothing.

    Example: mutune inspect configs/quickstart.yaml --to width=512
    """
    from . import audit
    from .cli_inspect import print_inspect

    if fmt not in ("table", "json"):
        raise SpecError("--format", f"expected table or json, got {fmt!r}")
    result = audit.inspect(config.load_spec(config_path, overrides or []), to or [])
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        print_inspect(result)


def _comma_list(text: str | None, key: str, cast: type) -> list | None:
    """``--widths 64,128`` / ``--values 1e-3,3e-3``: a list of ``cast``, or a user error naming the option."""
    if text is None:
        return None
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "integers" if cast is int else "numbers"
        raise SpecError(key, f"expected comma-separated {what}, got {text!r}") from None


@app.command()
def sweep(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    widths: Annotated[
        str | None,
        typer.Option(
            "--widths",
            metavar="W,W,...",
            help="comma-separated widths; default: the spec's width x1,2,4,8 (x1 with --depths)",
        ),
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(
            "--depths",
            metavar="D,D,...",
            help="comma-separated depths (relative to model.base_depth); default: the spec's",
        ),
    ] = None,
    param: Annotated[
        str, typer.Option("--param", metavar="NAME", help="the hyperparameter to sweep (any of hparams)")
    ] = "lr",
    values: Annotated[
        str | None,
        typer.Option(
            "--values",
            metavar="V,V,...",
            help="comma-separated values; default: the spec's value x 2^-4 ... 2^4",
        ),
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", metavar="N", help="seeds per point (spec seed, +1, ...)")
    ] = 1,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="sp", help="also sweep this parametrization (sp), the control"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", help="parallel worker processes on this machine")
    ] = 1,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", metavar="DIR", help="default: runs/<name>")
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="widths 32 and 64, 3 values, few steps (CI)")
    ] = False,
    max_drift: Annotated[
        float,
        typer.Option(
            "--max-drift", metavar="LOG2", help="flag a µP optimum drift above this many log2 units"
        ),
    ] = 1.0,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when a µP check is flagged")] = False,
) -> None:
    """Train a width (and/or depth) x value grid and show whether the optimum stays put (TP5 Figure 1).

    Writes checks/sweep-<param>-runs.csv, -summary.csv, .yaml and .png in the run dir. Flags (an
    optimum at the grid edge, a drift above --max-drift, a wider model doing worse) are reported;
    the exit code is 0 unless --strict. Re-running the same command resumes the sweep.

    Example: mutune sweep configs/quickstart.yaml --widths 64,128,256 --compare sp
    """
    spec = config.load_spec(config_path, overrides or [])
    if smoke:  # the sweep's smoke variant fixes its shape, widths and seeds: an explicit choice would be lost
        clash = config.smoke_conflict(config_path, overrides or [])
        clash = clash or ("--widths" if widths else "--seeds" if seeds != 1 else None)
        if clash:
            raise SpecError(clash, "--smoke would replace this explicit value; drop --smoke or the value")
    from . import search as search_mod
    from . import sweep as sweep_mod

    where = run_dir or search_mod.default_run_dir(spec, smoke)
    display = SweepDisplay()
    with _interruptible(display, where):
        res = sweep_mod.sweep(
            spec,
            param,
            _comma_list(widths, "--widths", int),
            _comma_list(values, "--values", float),
            seeds=seeds,
            compare=compare,
            run_dir=run_dir,
            smoke=smoke,
            workers=workers,
            max_drift=max_drift,
            depths=_comma_list(depths, "--depths", int),
            events=display,
        )
    print_sweep(res)
    raise typer.Exit(1 if strict and not res.passed else 0)


@app.command()
def laws(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a search run dir")],
    steps: Annotated[
        str | None,
        typer.Option("--steps", metavar="M,M,...", help="multiples of train.steps, e.g. 0.25,0.5,1"),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option("--batch-size", metavar="M,M,...", help="multiples of train.batch_size, e.g. 0.5,1,2"),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", metavar="N", help="seeds per point [default: 1]")
    ] = None,
    lr_step: Annotated[
        float | None, typer.Option("--lr-step", metavar="OCT", help="octaves between LRs [default: 0.5]")
    ] = None,
) -> None:
    """Fit (or extend) the LR laws across training length and batch size on a run dir's proxy.

    An LR line search around best.yaml's winner at each multiple; the fit goes into best.yaml
    (`laws:`), and `mutune transfer --to train.steps=...` applies it. Points already trained are
    reused, so adding a multiple trains only that one.

    Example: mutune laws runs/quickstart --steps 0.25,0.5,1
    """
    multiples = {
        "steps": _comma_list(steps, "--steps", float),
        "batch_size": _comma_list(batch_size, "--batch-size", float),
    }
    from . import laws_run

    display = Display()
    with _interruptible(display, run_dir):
        best = laws_run.extend(run_dir, multiples, seeds=seeds, lr_step=lr_step, events=display)
    for axis, law in best.get("laws", {}).items():
        iv = law["interval"]
        interval = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "none (2 points)"
        out.print(
            f"{law['key']}: LR* ∝ {axis}^{law['exponent']:.3f}, 95% interval {interval}, "
            f"{len(law['points'])} points -> {run_dir / 'best.yaml'}",
            highlight=False,
        )
    raise typer.Exit(0)


def _version(value: bool) -> None:
    if value:
        out.print(f"mutune {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="more logs (every training step)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    state.verbose, state.quiet, state.debug = verbose, quiet, debug


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--debug")
_default_showwarning = warnings.showwarning


def _interrupt_once() -> None:
    """SIGINT and SIGTERM (pre-emption) stop like Ctrl-C: a KeyboardInterrupt, raised once. A repeat
    while the first is being handled (the running trial marked, a checkpoint written, the hint
    printed) is ignored, so a quick double Ctrl-C cannot cut that short or print a traceback."""
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def _is_click_error(e: BaseException) -> bool:
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and hasattr(e, "show")


def _plain_flags(command) -> None:
    """Show flags as flags in the help: no ``<bool>`` type column for ``--smoke``, ``--help`` and the like."""
    ctx = typer.Context(command, help_option_names=HELP_NAMES)  # the app's, which subcommands inherit
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """mutune's own warnings (a repaired journal, a proxy narrower than its base) as one line each."""
    if issubclass(category, MutuneWarning):
        err.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def _error_line(text: str) -> None:
    err.print(f"error: {text}", highlight=False, markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map known errors to exit codes and one-line messages."""
    command = typer.main.get_command(app)
    _plain_flags(command)
    args = list(sys.argv[1:] if argv is None else argv)
    # global flags work anywhere on the line (`mutune search cfg.yaml --debug`), not only first
    flags = [a for a in args if a in GLOBAL_FLAGS]
    args = flags + [a for a in args if a not in GLOBAL_FLAGS]
    state.debug = "--debug" in flags
    state.argv = list(sys.argv[1:] if argv is None else argv)
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    if main_thread:
        _interrupt_once()
    with warnings.catch_warnings():
        warnings.simplefilter("default", MutuneWarning)
        warnings.showwarning = _show_warning
        try:
            return _run(command, args)
        finally:
            # called from Python (argv given): give the caller its handlers back. As the program, the
            # work is done: ignore a late repeat while the interpreter exits (Python's own shutdown
            # would reset a handler to the default, and a signal then kills the process, not 130)
            for s, handler in saved.items():
                signal.signal(s, handler if argv is not None else signal.SIG_IGN)


def _run(command, args: list[str]) -> int:
    """The command, with every known failure mapped to its exit code and one line (see the module doc)."""
    try:
        rv = command.main(args=args, prog_name="mutune", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SpecError as e:
        if state.debug:
            raise
        _error_line(str(e))
        return 2
    except SearchFailed as e:
        _error_line(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if type(e).__name__ == "Abort":  # click's name for a Ctrl-C outside a command's own handler
            return 130
        if _is_click_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":
                out.print(e.format_message(), markup=False, highlight=False)
                return 0
            _error_line(e.format_message())
            return e.exit_code
        if state.debug:
            raise
        cause = files.os_error(e)  # a full disk, a read-only folder: the path and the cause, exit 2
        if cause is not None:
            _error_line(files.os_error_line(cause))
            return 2
        _error_line(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        return 1
