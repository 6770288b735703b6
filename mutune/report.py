"""What a search found, from its run directory: tables, importances, tuning cost and figures.

``report(run_dir)`` reads the run directory and the Optuna study it names, and returns a
:class:`Report`: the trials (the same table as ``trials.csv``), the winning hyperparameters
(``best.yaml``, as written), Optuna's parameter importances (its default evaluator), and the
tuning cost, i.e. the search's FLOPs as a percentage of each target run found in the directory.
``write_figures`` draws the PNGs; ``to_json``, ``to_csv`` and ``to_markdown`` format it for
machines and CI logs. Nothing here trains or changes the study.

The proxy loss curve in ``curves.png`` comes from the trial's ``train_curve`` and ``val_curve``
user attributes, which the search records for every trial; a target's curve comes from its
``metrics.csv``.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from . import config, ladder, trials
from .config import DEFAULT_N_TRIALS, Best, RunDir, Spec, SpecError
from .config.rundir import PLAN_TYPES, RESULT_REQUIRED, RESULT_TYPES, read_run_file
from .study.storage import open_storage
from .study.trials import trial_params

REPORT_DIR = "report"  # under the run directory
MIN_TRIALS_FOR_IMPORTANCE = 2


@dataclass
class TargetRun:
    """One ``target-<key>/`` folder of the run directory (or the spec's target, only planned)."""

    key: str
    width: int
    planned_flops: float  # the target run's total compute, from its plan
    status: str  # finished, diverged, incomplete (plan but no result), planned (no folder yet)
    final_val_loss: float | None = None
    steps: int | None = None
    path: Path | None = None

    def tuning_cost_pct(self, search_flops: float) -> float:
        return 100.0 * search_flops / self.planned_flops if self.planned_flops else float("nan")


@dataclass
class Report:
    run_dir: Path
    spec: Spec
    study_name: str
    storage: str
    best: Best | None  # best.yaml (None before a trial completed)
    trials: pd.DataFrame  # one row per trial, as trials.csv
    importances: dict[str, float]  # Optuna's importances of the searched HPs, highest first
    importance_note: str  # which evaluator, or why there are none
    search_flops: float
    targets: list[TargetRun]
    proxy_curve: dict[str, Any] = field(default_factory=dict)  # the best trial's train/val curves
    figures: list[Path] = field(default_factory=list)

    # --- counts

    def counts(self) -> dict[str, int]:
        states = self.trials["state"].tolist() if len(self.trials) else []
        reasons = self.trials["fail_reason"].fillna("").astype(str).tolist() if len(self.trials) else []
        diverged = sum(s == "FAIL" and r.startswith("diverged") for s, r in zip(states, reasons, strict=True))
        return {
            "total": len(states),
            "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"),
            "diverged": diverged,
            "failed": states.count("FAIL") - diverged,
            "running": states.count("RUNNING"),
            "finished": states.count("COMPLETE") + states.count("PRUNED") + diverged,
        }

    def searched(self) -> list[str]:
        """The searched hyperparameters, most important first (then in the spec's order)."""
        names = list(self.spec.search.space)
        rank = {n: i for i, n in enumerate(self.importances)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))

    def proxy_trials(self) -> pd.DataFrame:
        """Rung 0: the ladder's runs are at other widths, their losses not comparable."""
        return self.trials[self.trials["rung"] == 0] if "rung" in self.trials else self.trials

    def n_trials(self) -> int:
        plan = self.provenance.get("plan") or {}  # proxy and ladder trials
        return plan.get("n_trials") or self.spec.search.n_trials or DEFAULT_N_TRIALS

    def top(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` best complete proxy trials, best first."""
        df = self.proxy_trials()
        if not len(df):
            return df
        done = df[df["state"] == "COMPLETE"].dropna(subset=["loss"])
        return done.sort_values(["loss", "number"]).head(n)

    @property
    def provenance(self) -> dict[str, Any]:
        return self.best.provenance if self.best is not None else {}

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """Everything the report says, as plain JSON-able types (NaN becomes None)."""
        prov = self.provenance
        cols = ["number", "state", "loss", *self.searched(), "steps", "seconds", "flops"]
        top_rows = [{c: _plain(row.get(c)) for c in cols} for row in self.top(top).to_dict("records")]
        return {
            "run_dir": str(self.run_dir),
            "study_name": self.study_name,
            "storage": self.storage,
            "model": {
                "family": self.spec.model.family,
                "parametrization": self.spec.model.parametrization,
                "proxy_width": self.spec.model.width,
                "base_width": self.spec.model.base_width,
            },
            "trials": {**self.counts(), "n_trials": self.n_trials()},
            "best": None
            if self.best is None
            else {
                "trial_number": prov.get("trial_number"),
                "loss": prov.get("loss"),
                "hparams": asdict(self.best.hparams),
                "searched": list(self.spec.search.space),
                "ladder": prov.get("ladder"),
            },
            "top_trials": top_rows,
            "importances": self.importances,
            "importance_note": self.importance_note,
            "tuning_cost": {
                "search_flops": self.search_flops,
                "targets": [
                    {
                        "key": t.key,
                        "width": t.width,
                        "status": t.status,
                        "target_flops": t.planned_flops,
                        "search_pct": _plain(t.tuning_cost_pct(self.search_flops)),
                        "final_val_loss": _plain(t.final_val_loss),
                    }
                    for t in self.targets
                ],
            },
            "figures": [str(_rel(p, self.run_dir)) for p in self.figures],
        }

    def cost_lines(self) -> list[str]:
        """The tuning-cost line, one per target."""
        from .units import human

        if not self.targets:
            return [
                f"search compute {human(self.search_flops)}FLOPs; no target run here yet "
                "(`mutune transfer RUN_DIR --to width=W --dry-run` plans one)"
            ]
        return [
            f"search compute = {t.tuning_cost_pct(self.search_flops):.1f}% of the width-{t.width} target "
            f"({human(self.search_flops)} / {human(t.planned_flops)} FLOPs; {t.key}: {t.status})"
            for t in self.targets
        ]


def _plain(v: Any) -> Any:
    """numpy scalars to Python, NaN to None."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _rel(p: Path, root: Path) -> Path:
    try:
        return Path(p).relative_to(root)
    except ValueError:
        return Path(p)


# ---------------------------------------------------------------------------------------------
# Reading a run directory


def _study_location(run_dir: Path, spec: Spec, best: Best | None) -> tuple[str, str]:
    """(storage URL or journal path, study name). A database URL comes from the spec or, failing
    that, from best.yaml's provenance; a journal is looked for in the run dir itself, so a run
    directory that was moved or copied still reports."""
    prov = best.provenance if best is not None else {}
    name = prov.get("study_name") or spec.search.study_name or spec.name
    recorded = str(prov.get("storage") or "")
    url = spec.search.storage or (recorded if "://" in recorded else str(run_dir / "study.journal"))
    return url, name


def load_study(run_dir: str | Path) -> optuna.Study:
    """The Optuna study of a run directory, read-only in spirit (what ``optuna-dashboard`` shows)."""
    run = RunDir(Path(run_dir))
    return _open(run.path, run.spec(), run.best())[0]


def _open(run_dir: Path, spec: Spec, best: Best | None) -> tuple[optuna.Study, str, str]:
    url, name = _study_location(run_dir, spec, best)
    if "://" not in url and not Path(url).is_file():
        raise SpecError(str(url), "study storage not found; is this a `mutune search` run directory?")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, repair=False)  # reads only: a torn tail is reported, not cut
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SpecError(str(url), f"holds no study named {name!r}") from None
    return study, url, name


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Optuna's importances (its default evaluator, PED-ANOVA in Optuna 5) over the proxy trials
    (the ladder's runs are at other widths and seeds), and a note."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in complete if ladder.WIDTH not in trial_params(t)]
    n = len(complete)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials (have {n})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proxy = optuna.create_study(direction="minimize")
            proxy.add_trials(complete)
            imp = optuna.importance.get_param_importances(proxy)
    except (RuntimeError, ValueError) as e:  # e.g. no parameter varies
        return {}, f"not computed: {e}"
    note = f"Optuna's default evaluator over {n} complete trials"
    if n < 10:
        note += "; few trials, so treat the ranking as rough"
    return {k: float(v) for k, v in imp.items()}, note


def _targets(run_dir: Path, spec: Spec, best: Best | None) -> list[TargetRun]:
    out = []
    for plan_path in sorted(run_dir.glob("target-*/plan.yaml")):
        plan = read_run_file(plan_path, "target plan", PLAN_TYPES)
        tdir = plan_path.parent
        status, loss, steps = "incomplete", None, None
        if (tdir / "result.yaml").is_file():
            res = read_run_file(tdir / "result.yaml", "result", RESULT_TYPES, required=RESULT_REQUIRED)
            status = "diverged" if res.get("diverged") else "finished"
            loss, steps = res.get("final_val_loss"), res.get("steps")
        out.append(
            TargetRun(
                key=tdir.name.removeprefix("target-"),
                width=int(plan.get("width") or 0),
                planned_flops=float((plan.get("cost") or {}).get("total_flops") or 0.0),
                status=status,
                final_val_loss=loss,
                steps=steps,
                path=tdir,
            )
        )
    planned_flops = (best.provenance.get("plan") or {}).get("target_flops") if best is not None else None
    if not out and planned_flops and spec.target.width is not None:
        try:  # the spec's own target, as the transfer derives it; its cost is the search plan's
            target = config.derive(spec, config.target.own_changes(spec), source="target")
        except SpecError:
            return out
        out.append(
            TargetRun(
                key=target.key(),
                width=target.spec.model.width,
                planned_flops=float(planned_flops),
                status="planned",
            )
        )
    return out


def report(run_dir: str | Path) -> Report:
    """Read a run directory (and its study) into a :class:`Report`; writes nothing."""
    run = RunDir(Path(run_dir))
    run_dir, spec, best = run.path, run.spec(), run.best()
    study, url, name = _open(run_dir, spec, best)
    table = trials.trials_table(study)
    imp, note = importances(study)
    prov = best.provenance if best is not None else {}
    search_flops = prov.get("search_flops")
    if search_flops is None:
        search_flops = float(table["flops"].fillna(0).sum()) if len(table) else 0.0
    curve: dict[str, Any] = {}
    if best is not None:
        t = next((t for t in study.get_trials(deepcopy=False) if t.number == prov.get("trial_number")), None)
        if t is not None:
            curve = {
                "trial": t.number,
                "train": t.user_attrs.get("train_curve") or {},
                "val": t.user_attrs.get("val_curve") or {},
            }
    return Report(
        run_dir=run_dir,
        spec=spec,
        study_name=name,
        storage=url,
        best=best,
        trials=table,
        importances=imp,
        importance_note=note,
        search_flops=float(search_flops),
        targets=_targets(run_dir, spec, best),
        proxy_curve=curve,
    )


# ---------------------------------------------------------------------------------------------
# Machine formats


def to_json(rep: Report, top: int = 10) -> str:
    return json.dumps(rep.to_dict(top), indent=2)


def to_csv(rep: Report) -> str:
    """Every trial, best first (complete trials by loss, then the rest by number), with a rank."""
    df = rep.trials
    if not len(df):
        return ""
    cols = ["number", "state", "loss", *rep.searched(), "steps", "tokens", "flops", "seconds", "fail_reason"]
    df = df.assign(_done=df["loss"].notna()).sort_values(
        ["_done", "loss", "number"], ascending=[False, True, True]
    )
    df = df[[c for c in cols if c in df.columns]]
    df.insert(0, "rank", range(1, len(df) + 1))
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    v = _plain(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(rep: Report, top: int = 10) -> str:
    """A Markdown summary (for a CI job summary or a pull request)."""
    c = rep.counts()
    m = rep.spec.model
    parts = [
        f"## mutune report: `{rep.run_dir}`",
        "",
        f"{m.family} proxy width {m.width} (base {m.base_width}, {m.parametrization}); study `{rep.study_name}`: "
        f"{c['finished']} of {rep.n_trials()} trials finished ({c['complete']} complete, "
        f"{c['diverged']} diverged, {c['failed']} failed, {c['running']} running).",
        "",
    ]
    if rep.best is not None:
        prov = rep.best.provenance
        searched = set(rep.spec.search.space)
        parts += [
            f"### Winning hyperparameters (trial #{prov['trial_number']}, loss {prov['loss']:.4f})",
            "",
            _md_table(
                ["hparam", "value", "searched"],
                [[k, v, "yes" if k in searched else ""] for k, v in asdict(rep.best.hparams).items()],
            ),
            "",
        ]
    names = rep.searched()
    rows = [
        [int(r["number"]), f"{r['loss']:.4f}", *[r.get(n) for n in names], r.get("seconds")]
        for _, r in rep.top(top).iterrows()
    ]
    parts += [f"### Top {len(rows)} trials", "", _md_table(["trial", "loss", *names, "seconds"], rows), ""]
    parts += ["### Parameter importances", ""]
    if rep.importances:
        parts += [_md_table(["hparam", "importance"], [[k, v] for k, v in rep.importances.items()]), ""]
    parts += [f"_{rep.importance_note}_", "", "### Tuning cost", ""]
    parts += [f"- {line}" for line in rep.cost_lines()]
    if rep.figures:
        parts += ["", "### Figures", ""]
        parts += [f"![{p.stem}]({_rel(p, rep.run_dir)})" for p in rep.figures]
    return "\n".join(parts) + "\n"


def write_figures(rep: Report, out_dir: str | Path | None = None) -> list[Path]:
    """history.png, params.png and curves.png under ``out_dir`` (default ``<run_dir>/report``)."""
    from . import report_figures

    return report_figures.write_figures(
        rep, Path(out_dir) if out_dir is not None else rep.run_dir / REPORT_DIR
    )


from . import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.X(...) calls X.X(...)
