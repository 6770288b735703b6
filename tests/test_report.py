"""mutune report, init, show-config and the dashboard storage, through the CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import typing

import optuna
import pandas as pd
import pytest
import yaml

from mutune import config, report, search

from .conftest import TINY, write_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_init_show_config_search_report_json(run_cli, workdir):
    """The acceptance path: a starter spec, resolved, searched (smoke), reported as JSON."""
    r = run_cli("init", "starter.yaml")
    assert r.code == 0, r
    r = run_cli("show-config", "starter.yaml")
    assert r.code == 0, r
    shown = yaml.safe_load(r.out)
    assert shown == config.shown(
        config.load_spec("starter.yaml")
    )  # resolved, keys that do not apply left out
    assert config.spec_from_dict({**shown, "name": "starter"}) == config.load_spec(
        "starter.yaml"
    )  # itself a spec

    r = run_cli("search", "starter.yaml", "--smoke")
    assert r.code == 0, r
    run = workdir / "runs" / "starter-smoke"
    best = yaml.safe_load((run / "best.yaml").read_text())
    trials = pd.read_csv(run / "trials.csv")

    r = run_cli("report", run, "--format", "json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["best"]["hparams"] == best["hparams"]  # exactly, every key
    assert doc["best"]["trial_number"] == best["provenance"]["trial_number"]
    assert doc["best"]["loss"] == best["provenance"]["loss"]
    assert doc["trials"]["total"] == len(trials) == 3  # --smoke caps the search at 3 trials
    assert doc["trials"]["complete"] == (trials.state == "COMPLETE").sum()
    assert doc["trials"]["finished"] == best["provenance"]["n_trials_finished"]
    assert [t["number"] for t in doc["top_trials"]] == trials.sort_values("loss").number.tolist()
    assert set(doc["importances"]) == set(config.load_spec("starter.yaml").search.space)
    assert sum(doc["importances"].values()) == pytest.approx(1.0)
    # tuning cost: the search's FLOPs against the target the smoke search trained
    (target,) = doc["tuning_cost"]["targets"]
    plan = yaml.safe_load((run / "target-width64" / "plan.yaml").read_text())
    assert doc["tuning_cost"]["search_flops"] == best["provenance"]["search_flops"] == trials.flops.sum()
    assert target["status"] == "finished" and target["width"] == 64
    assert target["search_pct"] == pytest.approx(100 * trials.flops.sum() / plan["cost"]["total_flops"])
    # the figures, written under the run dir, listed in report.json
    assert doc["figures"] == ["report/history.png", "report/params.png", "report/curves.png"]
    for name in doc["figures"]:
        data = (run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert json.loads((run / "report" / "report.json").read_text()) == doc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny search (4 trials, one diverging) with a width-64 target run."""
    from mutune import transfer

    d = tmp_path_factory.mktemp("report") / "run"
    spec = config.spec_from_dict(
        {**TINY, "search": {"n_trials": 4, "space": {"lr": {"type": "categorical", "choices": [0.01, 1e4]}}}},
        ["search.space.init_std={type: log_uniform, low: 0.01, high: 0.3}"],
    )
    search.search(spec, run_dir=d, transfer=False, argv=["test"])
    transfer.transfer(d, ["width=64"])
    return d


def test_report_formats(run_cli, tiny_run, tmp_path):
    r = run_cli("report", tiny_run, "--format", "csv", "--out", tmp_path / "rep")
    assert r.code == 0, r
    df = pd.read_csv(io.StringIO(r.out))
    trials = pd.read_csv(tiny_run / "trials.csv")
    assert len(df) == len(trials) and list(df["rank"]) == list(range(1, len(df) + 1))
    done = df[df.state == "COMPLETE"]
    assert list(done.loss) == sorted(done.loss) and df.loss.isna().tolist() == sorted(df.loss.isna().tolist())
    assert {"lr", "init_std", "flops"} <= set(df.columns)
    assert sorted((tmp_path / "rep").iterdir()) == sorted(
        tmp_path / "rep" / n for n in ("curves.png", "history.png", "params.png", "report.json")
    )

    r = run_cli("report", tiny_run, "--format", "md", "--no-plots", "--out", tmp_path / "md")
    assert r.code == 0, r
    assert r.out.startswith("## mutune report") and "### Winning hyperparameters" in r.out
    assert "| hparam | value | searched |" in r.out and "### Tuning cost" in r.out
    assert not list((tmp_path / "md").glob("*.png"))

    r = run_cli("report", tiny_run, "--out", tmp_path / "table")  # the rich tables, for people
    assert r.code == 0, r


def test_report_counts_diverged_trials_and_draws_them(tiny_run):
    rep = report.report(tiny_run)
    c = rep.counts()
    trials = pd.read_csv(tiny_run / "trials.csv")
    assert c["total"] == 4 and c["diverged"] == (trials.lr == 1e4).sum() > 0
    assert c["complete"] + c["diverged"] == 4 == c["finished"]
    d = rep.to_dict()
    assert all(t["loss"] is not None for t in d["top_trials"])  # diverged trials never rank
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # strict JSON: no NaN anywhere
    (t,) = rep.targets
    assert t.width == 64 and t.status == "finished" and math.isfinite(t.final_val_loss)
    assert rep.proxy_curve["trial"] == rep.best.provenance["trial_number"]
    paths = report.write_figures(rep, tiny_run / "figs")
    assert [p.name for p in paths] == ["history.png", "params.png", "curves.png"]


def test_report_with_fewer_than_two_complete_trials(run_cli, workdir):
    spec = write_spec(workdir / "one.yaml", {**TINY, "search": {"n_trials": 1}})
    assert run_cli("search", spec, "--no-transfer").code == 0
    r = run_cli("report", workdir / "runs" / "tiny", "--format", "json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["importances"] == {} and "at least 2" in doc["importance_note"]
    assert doc["trials"]["complete"] == 1
    assert doc["tuning_cost"]["targets"] == []  # no target width in the spec, none run


def test_report_when_every_trial_diverged(run_cli, workdir):
    spec = write_spec(
        workdir / "d.yaml",
        {
            **TINY,
            "hparams": {"lr": 1e4},
            "search": {"n_trials": 2, "space": {"beta1": {"type": "uniform", "low": 0.8, "high": 0.9}}},
        },
    )
    assert run_cli("search", spec, "--no-transfer").code == 1  # nothing usable, but the run dir is there
    r = run_cli("report", workdir / "runs" / "tiny", "--format", "json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["best"] is None and doc["trials"]["diverged"] == 2 and doc["top_trials"] == []
    assert (workdir / "runs" / "tiny" / "report" / "history.png").is_file()


def test_report_latest_run_and_errors(run_cli, workdir, tiny_run):
    r = run_cli("report")
    assert r.code == 2 and "mutune search" in r.err  # no ./runs here
    for argv, name in (
        (["report", "nowhere"], "nowhere"),
        (["report", str(workdir)], "config.yaml"),
        (["report", str(tiny_run), "--format", "xml"], "--format"),
    ):
        r = run_cli(*argv)
        assert r.code == 2, (argv, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], r.err


def test_dashboard_storage_is_a_plain_optuna_journal(tiny_run):
    """What `optuna-dashboard RUN_DIR/study.journal` opens: Optuna loads it with no mutune code."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tiny_run / "study.journal"))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    best = yaml.safe_load((tiny_run / "best.yaml").read_text())
    assert len(study.trials) == 4
    assert study.best_trial.number == best["provenance"]["trial_number"]
    assert study.best_value == best["provenance"]["loss"]
    assert study.best_trial.params.items() <= best["hparams"].items()
    # each trial carries its loss curves (what the report's curves.png draws for the proxy)
    t = study.best_trial
    assert t.user_attrs["val_curve"]["val_loss"][-1] == t.value
    assert t.user_attrs["val_curve"]["step"][-1] == TINY["train"]["steps"]
    assert len(t.user_attrs["train_curve"]["step"]) == len(t.user_attrs["train_curve"]["train_loss"]) > 1


# ---------------------------------------------------------------------------------------------
# init and show-config


def _field_paths(cls, prefix=""):
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _field_paths(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


@pytest.mark.parametrize("model", ["gpt", "mlp"])
def test_init_writes_every_key_commented_and_a_valid_spec(model, run_cli, workdir):
    from mutune import docs

    r = run_cli("init", "--model", model, "s.yaml")
    assert r.code == 0, r
    text = (workdir / "s.yaml").read_text()
    spec = config.load_spec(workdir / "s.yaml")
    assert spec.model.family == model and spec.name == "s"
    lines = text.splitlines()
    for path, f in _field_paths(config.Spec):
        leaf, depth = path.rsplit(".", 1)[-1], path.count(".")
        matches = [ln for ln in lines if ln.startswith("  " * depth + leaf + ":")]
        assert matches, path
        default = ", ".join(config.DEFAULT_SPACE) if path == "search.space" else docs.scalar(docs._default(f))
        assert any(f"default {default}: {f.metadata['doc']}" in ln for ln in matches), path
    hp_docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(config.HParams)}
    for name in spec.search.space:  # each searched HP with its hparams doc
        (line,) = [ln for ln in lines if ln.startswith(f"    {name}: ")]
        assert hp_docs[name] in line
    # every key is written out: nothing is left to a default (the space entries omit unused fields)
    written, resolved = yaml.safe_load(text), spec.to_dict()
    written["search"].pop("space"), resolved["search"].pop("space")
    assert written == resolved


def test_init_mlp_starter_runs_as_written(run_cli, workdir):
    assert run_cli("init", "--model", "mlp", "m.yaml").code == 0
    r = run_cli("search", "m.yaml", "--smoke", "search.n_trials=2")
    assert r.code == 0, r
    assert (workdir / "runs" / "m-smoke" / "target-width64" / "result.yaml").is_file()


def test_init_factory_and_overwrite(run_cli, workdir):
    r = run_cli("init", "--model", "factory", "f.yaml")  # the model file beside it: no examples/ needed
    assert r.code == 0, r
    spec = config.load_spec(workdir / "f.yaml")
    assert spec.model.family == "factory" and spec.model.factory == f"{workdir / 'f_model.py'}:build"
    assert run_cli("search", "f.yaml", "--smoke", "--no-transfer").code == 0  # it runs as written
    assert run_cli("init", "x.yaml").code == 0
    before = (workdir / "x.yaml").read_text()
    r = run_cli("init", "--model", "mlp", "x.yaml")
    assert r.code == 2 and "--force" in r.err and (workdir / "x.yaml").read_text() == before
    assert run_cli("init", "--model", "mlp", "x.yaml", "--force").code == 0
    assert config.load_spec(workdir / "x.yaml").model.family == "mlp"


def test_show_config_applies_overrides_and_smoke(run_cli, tiny_spec):
    r = run_cli("show-config", tiny_spec, "train.steps=7", "search.space.lr.high=0.2")
    assert r.code == 0, r
    d = yaml.safe_load(r.out)
    assert d["train"]["steps"] == 7 and d["search"]["space"]["lr"]["high"] == 0.2
    assert d["train"]["eval_batches"] == TINY["train"]["eval_batches"] and d["data"]["corpus"] == "stdlib"
    assert set(d["search"]["space"]) == set(
        config.default_space(d["model"]["family"], d["model"]["parametrization"])
    )
    r = run_cli("show-config", tiny_spec, "--smoke")
    assert r.code == 0 and yaml.safe_load(r.out)["search"]["n_trials"] == 3
    r = run_cli("show-config", tiny_spec, "train.stepz=3")
    assert r.code == 2 and "train.stepz" in r.err and r.out == ""


def test_report_reads_a_database_storage_and_a_moved_run_dir(run_cli, workdir, tiny_run):
    db = workdir / "studies.db"
    spec = write_spec(workdir / "db.yaml", {**TINY, "search": {"n_trials": 2, "storage": f"sqlite:///{db}"}})
    assert run_cli("search", spec, "--no-transfer").code == 0
    run = workdir / "runs" / "tiny"
    assert db.is_file() and not (run / "study.journal").exists()
    r = run_cli("report", run, "--format", "json", "--no-plots")
    assert r.code == 0, r
    assert json.loads(r.out)["trials"]["complete"] == 2 and json.loads(r.out)["storage"].startswith("sqlite:")
    # a journal run directory copied elsewhere reports from its own copy of the journal
    moved = shutil.copytree(tiny_run, workdir / "elsewhere" / "copy")
    r = run_cli("report", moved, "--format", "json", "--no-plots")
    assert r.code == 0, r
    assert (
        json.loads(r.out)["best"]["hparams"]
        == yaml.safe_load((tiny_run / "best.yaml").read_text())["hparams"]
    )
