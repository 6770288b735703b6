"""The pinned-losses harness: "a change that is not a computation change gives bit-identical losses".

``collect(workdir)`` runs a few tiny jobs through the public CLI under fixed seeds on one CPU thread
and returns every loss (and coord-check activation size) they produced, as exact floats. The values
in ``pinned.json`` were produced by this same harness (``python -m tests.pinned.harness --write``),
first on the code *before* the redesign (commit e9d6408); tests/test_pinned.py re-runs it and asserts
bit-for-bit equality. Regenerate the file only for a change that is meant to change the numbers, and
say so in the commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).with_name("pinned.json")

# (label, config, overrides) of the searches; each is followed by a transfer of its winner
SEARCHES = [
    ("quickstart", "quickstart.yaml", []),
    ("quickstart-tied", "quickstart.yaml", ["model.tie_embeddings=true"]),
    (
        "quickstart-sgd",
        "quickstart.yaml",
        ["train.optimizer=sgd", "search.space.lr.low=0.01", "search.space.lr.high=1.0", "--skip-check"],
    ),
    ("quickstart-sp", "quickstart.yaml", ["model.parametrization=sp"]),
    ("mlp", "mlp.yaml", []),
    ("factory", "factory.yaml", []),
]


def _cli(*args: str) -> None:
    from mutune import cli

    code = cli.main([str(a) for a in args])
    if code != 0:
        raise RuntimeError(f"mutune {' '.join(map(str, args))} exited {code}")


def _csv(path: Path) -> pd.DataFrame:
    """Every cell as its exact text, so floats parse with Python's own (round-trip exact) float()."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def collect(workdir: Path) -> dict:
    """Run the jobs in ``workdir`` (the current directory must be the repository root's parent of
    ``configs``... any; config paths are absolute) and return the numbers they produced."""
    torch.set_num_threads(1)
    cfg = ROOT / "configs"
    out: dict = {}
    for label, name, overrides in SEARCHES:
        run = workdir / label
        _cli("search", cfg / name, *overrides, "--smoke", "--no-transfer", "--run-dir", run, "-q")
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))
        )
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[f"search/{label}"] = [t.value for t in study.trials]
        out[f"search/{label}/train_curves"] = [
            t.user_attrs["train_curve"]["train_loss"] for t in study.trials
        ]
        out[f"search/{label}/val_curves"] = [t.user_attrs["val_curve"]["val_loss"] for t in study.trials]
        _cli("transfer", run, "--to", "width=64", "--smoke", "-q")
        target = run / "target-width64"
        metrics = _csv(target / "metrics.csv")  # train losses are written with 6 digits there
        out[f"transfer/{label}/train_loss"] = [float(v) for v in metrics.train_loss if v]
        result = yaml.safe_load((target / "result.yaml").read_text())
        out[f"transfer/{label}/val_loss"] = [r["val_loss"] for r in result["curve"]]
    for label, name, overrides in [("quickstart", "quickstart.yaml", []), ("mlp", "mlp.yaml", [])]:
        run = workdir / f"cc-{label}"
        _cli("coord-check", cfg / name, *overrides, "--smoke", "--seeds", "1", "--run-dir", run, "-q")
        records = _csv(run / "checks" / "coord_check.csv")
        out[f"coord_check/{label}"] = [
            [r.layer, int(r.width), int(r.t), float(r.l1)] for r in records.itertuples()
        ]
    run = workdir / "sweep"
    _cli("sweep", cfg / "quickstart.yaml", "--smoke", "--compare", "sp", "--run-dir", run, "-q")
    runs = _csv(run / "checks" / "sweep-lr-runs.csv")
    out["sweep/quickstart"] = [
        [r.parametrization, int(r.width), float(r.value), float(r.loss)] for r in runs.itertuples()
    ]
    return out


def main() -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as d:
        old = Path.cwd()
        os.chdir(ROOT)  # factory.yaml imports examples.my_model from the repository root
        try:
            values = collect(Path(d))
        finally:
            os.chdir(old)
    if "--write" in sys.argv:
        PINNED.write_text(json.dumps(values, indent=1) + "\n")
        print(f"wrote {PINNED}")
    else:
        print(json.dumps(values)[:2000])


if __name__ == "__main__":
    main()
