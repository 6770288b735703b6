"""The pinned-losses harness: "a change that is not a computation change gives bit-identical losses".

``collect(workdir)`` runs a few tiny jobs through the public CLI under fixed seeds on one CPU thread
and returns every loss (and coord-check activation size) they produced, as exact floats.

Float32 results are bit-reproducible on one CPU and torch build, not across them: torch and MKL pick
their kernels by the CPU's vector capability (AVX2, AVX512, ...), and a different kernel sums in a
different order. So ``pinned.json`` holds one *set* of values per environment it was made on
(``environment()``: torch's CPU capability, the torch version, the machine architecture), all made
from the same code. tests/test_pinned.py compares bit for bit against the set made on an environment
like this one, and within ``RTOL`` of every set (see ``RTOL`` for why that still catches a computation
change). ``python -m tests.pinned.harness --add`` records this environment's set beside the others
(after checking it agrees with them within ``RTOL``); ``--extend`` adds the keys pinned since
(:data:`ADDED`) to this environment's set, after checking every value already pinned reproduces;
``--write`` replaces every set with this one's,
for a change meant to change the numbers (the other environments' sets are then stale and dropped):
say so in the commit.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).with_name("pinned.json")

# Across CPUs the same code gave values up to 7.4e-6 apart, relative (AVX512 against the machine the
# first set was made on: coord-check sizes 7.4e-6, SGD losses 5.9e-6; 3 training steps keep the drift
# small). 1e-4 leaves a 13x margin over that and is still far below what any change of a µP rule, an
# optimizer setting or the data order does to these numbers: tests/test_pinned.py shows that a 0.1%
# change of one multiplier fails it. What it cannot catch is a reordering of float operations (a few
# ulps): only the bit-for-bit comparison on a matching environment sees those.
RTOL = 1e-4

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
    ("moe", "moe.yaml", []),
]
# more targets of a search than width=64, by label: the moe proxy at more experts (the experts axis)
MORE_TARGETS = {"moe": [("experts8", "experts=8", "target-n_experts8")]}
# keys pinned after the first sets were made, so only on the environments that have recorded them
# since (``--extend``): a set made before them lacks them, and is not compared on them
ADDED = frozenset(
    f"{kind}/moe{rest}"
    for kind, rest in (
        ("search", ""),
        ("search", "/train_curves"),
        ("search", "/val_curves"),
        ("transfer", "/train_loss"),
        ("transfer", "/val_loss"),
    )
) | {"transfer/moe-experts8/train_loss", "transfer/moe-experts8/val_loss"}


def _cli(*args: str) -> None:
    from mutune import cli

    code = cli.main([str(a) for a in args])
    if code != 0:
        raise RuntimeError(f"mutune {' '.join(map(str, args))} exited {code}")


def _csv(path: Path) -> pd.DataFrame:
    """Every cell as its exact text, so floats parse with Python's own (round-trip exact) float()."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def collect(workdir: Path, only: str | None = None) -> dict:
    """Run the jobs in ``workdir`` (config paths are absolute; the factory spec needs the repository
    root as the current directory) and return the numbers they produced; ``only``: one search's label,
    its search and transfer alone."""
    torch.set_num_threads(1)
    cfg = ROOT / "configs"
    out: dict = {}
    for label, name, overrides in SEARCHES:
        if only is not None and label != only:
            continue
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
        targets = [("", "width=64", "target-width64"), *MORE_TARGETS.get(label, [])]
        for suffix, to, folder in targets:
            _cli("transfer", run, "--to", to, "--smoke", "-q")
            target = run / folder
            key = f"transfer/{label}{'-' + suffix if suffix else ''}"
            metrics = _csv(target / "metrics.csv")  # train losses are written with 6 digits there
            out[f"{key}/train_loss"] = [float(v) for v in metrics.train_loss if v]
            result = yaml.safe_load((target / "result.yaml").read_text())
            out[f"{key}/val_loss"] = [r["val_loss"] for r in result["curve"]]
    if only is not None:
        return out
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


def environment() -> dict:
    """What decides the last bits of a float32 result here: the kernels torch dispatches to."""
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def load() -> list[dict]:
    """The pinned sets: ``[{"made_on": environment(), "values": {key: floats}}, ...]``."""
    return json.loads(PINNED.read_text())["sets"]


def matching(sets: list[dict], env: dict) -> dict | None:
    """The set made on an environment like ``env``, if any: the one to compare bit for bit."""
    return next((s for s in sets if s["made_on"] == env), None)


def differences(produced, pinned, *, rtol: float = 0.0, path: str = "") -> list[str]:
    """Where ``produced`` differs from ``pinned``: exact equality when ``rtol`` is 0, else
    |a - b| <= rtol * |b| for every float. Structure (keys, lengths, labels, integers) must match
    exactly either way; NaN equals only NaN."""
    if isinstance(pinned, dict) or isinstance(produced, dict):
        if not (isinstance(pinned, dict) and isinstance(produced, dict)):
            return [f"{path}: {type(produced).__name__} where {type(pinned).__name__} was pinned"]
        out = [f"{path}/{k}: missing" for k in pinned if k not in produced]
        out += [f"{path}/{k}: not pinned" for k in produced if k not in pinned]
        for k in pinned:
            if k in produced:
                out += differences(produced[k], pinned[k], rtol=rtol, path=f"{path}/{k}")
        return out
    if isinstance(pinned, list) or isinstance(produced, list):
        if not (isinstance(pinned, list) and isinstance(produced, list)) or len(pinned) != len(produced):
            return [f"{path}: {produced!r:.60} has another shape than the pinned {pinned!r:.60}"]
        out = []
        for i, (a, b) in enumerate(zip(produced, pinned, strict=True)):
            out += differences(a, b, rtol=rtol, path=f"{path}[{i}]")
        return out
    if isinstance(pinned, float) and isinstance(produced, float):
        if math.isnan(pinned) or math.isnan(produced):
            same = math.isnan(pinned) and math.isnan(produced)
        elif rtol == 0.0:
            same = produced == pinned
        else:
            same = abs(produced - pinned) <= rtol * abs(pinned)
        return [] if same else [f"{path}: {produced!r} vs pinned {pinned!r}"]
    return (
        []
        if produced == pinned and type(produced) is type(pinned)
        else [f"{path}: {produced!r} vs {pinned!r}"]
    )


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
    env = environment()
    if "--write" in sys.argv:
        sets = [{"made_on": env, "values": values}]
    elif "--extend" in sys.argv:
        # this environment's set gains the keys it lacks (ADDED ones), once every value it and the
        # other sets already pin is reproduced (bit for bit here, within RTOL there)
        sets = load()
        mine = matching(sets, env)
        if mine is None:
            sys.exit(f"no set was made on {env}: --add one first")
        for s in sets:
            old = {k: v for k, v in values.items() if k in s["values"]}
            if diff := differences(old, s["values"], rtol=0.0 if s is mine else RTOL):
                sys.exit(
                    f"not extended: {len(diff)} pinned values differ from the set made on {s['made_on']}"
                )
        new = {k: v for k, v in values.items() if k not in mine["values"]}
        if set(new) - ADDED:
            sys.exit(f"not extended: {sorted(set(new) - ADDED)} are not in harness.ADDED")
        mine["values"].update(new)
    elif "--add" in sys.argv:
        sets = [s for s in load() if s["made_on"] != env]
        for s in sets:
            if diff := differences(values, s["values"], rtol=RTOL):
                sys.exit(
                    f"not added: {len(diff)} values differ from the set made on {s['made_on']} "
                    f"by more than {RTOL} (first: {diff[0]}); a computation change needs --write"
                )
        sets.append({"made_on": env, "values": values})
    else:
        print(json.dumps(values)[:2000])
        return
    PINNED.write_text(json.dumps({"sets": sets}, indent=1) + "\n")
    print(f"wrote {PINNED}: {len(sets)} set(s), this one made on {env}")


if __name__ == "__main__":
    main()
