"""Experiment trackers: every proxy trial and every target run as one run in TensorBoard, MLflow or W&B.

A team already watches its runs in one of these; mutune writes there through each library's own
API, with defaults that need no server: TensorBoard event files, an MLflow file store and W&B in
offline mode, all in the run directory (``tracker.dir`` moves them). Each run gets its
hyperparameters, the train loss, LR and tokens/s at every log step, the validation loss at every
evaluation, the final result, and its provenance (spec hash, trial number, versions) as tags.

It hangs on the trainer's one callback seam: :func:`attach` wraps ``on_log``/``on_eval``, so the
training loop knows nothing of trackers. The libraries are optional extras
(``pip install 'mutune[tensorboard]'``, ``[mlflow]``, ``[wandb]``), imported only when a run starts.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SpecError

# backend -> (the module it needs, the extra that installs it)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def check(backend: str) -> None:
    """Refuse, naming the key and the install line, a backend whose library is not installed."""
    if backend == "none":
        return
    module, extra = PACKAGES[backend]
    if importlib.util.find_spec(module) is None:
        raise SpecError("tracker.backend", f"{backend} is not installed: pip install 'mutune[{extra}]'")


@dataclass(frozen=True)
class Tracking:
    """Where and how runs are tracked; plain data, so spawned search workers receive it whole."""

    backend: str
    dir: str  # absolute
    project: str
    group: str  # the study (proxy trials) or the search run (targets)

    @classmethod
    def from_spec(cls, tracker: Any, run_dir: Path, project: str, group: str) -> Tracking | None:
        """``tracker`` is the spec's ``tracker`` section; None when it tracks nothing."""
        if tracker.backend == "none":
            return None
        check(tracker.backend)
        where = Path(tracker.dir) if tracker.dir else run_dir
        return cls(tracker.backend, str(where.resolve()), tracker.project or project, group)

    def start(self, name: str, job_type: str, params: dict[str, Any], tags: dict[str, Any]) -> TrackedRun:
        """Open one run: ``params`` are its hyperparameters, ``tags`` its provenance."""
        impl = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}[self.backend]
        tags = {"mutune.version": __version__, "mutune.job_type": job_type, **tags}
        return impl(self, name, job_type, params, {k: str(v) for k, v in tags.items()})


class TrackedRun:
    """One run in a tracker: ``log`` as it trains, ``finish`` once with the result."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], status: str = "FINISHED") -> None:
        """``status``: FINISHED, FAILED (diverged, crashed), KILLED (interrupted) or PRUNED."""
        raise NotImplementedError


def attach(
    run: TrackedRun | None, on_log: Callable | None, on_eval: Callable | None
) -> tuple[Callable | None, Callable | None]:
    """The trainer's callbacks, also sending each log step and evaluation to ``run`` (first, so that
    a pruned trial's last evaluation is recorded before the pruner stops it)."""
    if run is None:
        return on_log, on_eval

    def logged(log: Any) -> None:
        run.log(
            {"train/loss": log.train_loss, "train/lr": log.lr, "train/tokens_per_s": log.tokens_per_s},
            log.step,
        )
        if on_log is not None:
            on_log(log)

    def evaluated(step: int, val_loss: float) -> None:
        run.log({"val/loss": val_loss}, step)
        if on_eval is not None:
            on_eval(step, val_loss)

    return logged, evaluated


def _scalar(v: Any) -> float | int | str | bool:
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def _finite(summary: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class _TensorBoard(TrackedRun):
    """torch's SummaryWriter: ``<dir>/tensorboard/<name>/``; hyperparameters in the HParams plugin."""

    def __init__(self, where: Tracking, name: str, job_type: str, params: dict, tags: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.params = {k: _scalar(v) for k, v in params.items()}
        self.writer = SummaryWriter(log_dir=str(Path(where.dir) / "tensorboard" / name))
        self.writer.add_text("provenance", "\n".join(f"{k}: {v}  " for k, v in sorted(tags.items())))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def finish(self, summary: dict[str, Any], status: str = "FINISHED") -> None:
        finals = {f"final/{k}": v for k, v in _finite(summary).items()}
        self.writer.add_hparams(
            {**self.params, "status": status}, finals or {"final/none": 0.0}, run_name="."
        )
        self.writer.close()


class _MLflow(TrackedRun):
    """MLflow's client API (no global state, safe in worker processes) on a file store ``<dir>/mlruns``,
    or on ``MLFLOW_TRACKING_URI`` when that is set."""

    def __init__(self, where: Tracking, name: str, job_type: str, params: dict, tags: dict):
        # mlflow 3 refuses a file store unless told that it is wanted; it is here (no server, no DB)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(where.dir) / "mlruns").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(where.project)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            try:
                exp_id = self.client.create_experiment(where.project)
            except Exception:  # another worker created it first
                exp_id = self.client.get_experiment_by_name(where.project).experiment_id
        tags = {**tags, "mutune.group": where.group}
        self.run_id = self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, summary: dict[str, Any], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(summary.get("steps") or 0)
        finals = [Metric(f"final/{k}", v, now, step) for k, v in _finite(summary).items()]
        self.client.log_batch(self.run_id, metrics=finals)
        self.client.set_tag(self.run_id, "mutune.status", status)
        self.client.set_terminated(
            self.run_id,
            "KILLED"
            if status == "KILLED"
            else ("FINISHED" if status in ("FINISHED", "PRUNED") else "FAILED"),
        )


_wandb_teardown_registered = False


class _WandB(TrackedRun):
    """``wandb.init`` in offline mode (``WANDB_MODE`` overrides) under ``<dir>/wandb/``, quiet: it
    does not capture the console, sample the system or read git."""

    def __init__(self, where: Tracking, name: str, job_type: str, params: dict, tags: dict):
        import wandb

        global _wandb_teardown_registered
        settings = wandb.Settings(
            mode=os.environ.get("WANDB_MODE", "offline"),
            console="off",
            x_disable_stats=True,
            x_disable_meta=True,
            disable_git=True,
            save_code=False,
            x_save_requirements=False,
            silent=True,
        )
        self.run = wandb.init(
            project=where.project,
            name=name,
            group=where.group,
            job_type=job_type,
            config={**params, "provenance": tags},
            dir=where.dir,
            settings=settings,
            reinit="finish_previous",
        )
        if not _wandb_teardown_registered:  # its service process lingers until this (or exit)
            atexit.register(wandb.teardown)
            _wandb_teardown_registered = True

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any], status: str = "FINISHED") -> None:
        self.run.summary.update({**summary, "status": status})
        self.run.finish(exit_code=0 if status in ("FINISHED", "PRUNED") else 1)
