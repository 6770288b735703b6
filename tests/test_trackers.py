"""Experiment trackers: a search with ``--tracker X`` (two trials and the target) read back by X's own library.

Each test is skipped, saying so, when its optional extra is not installed (``.ci/run`` installs
them all: ``pip install -e '.[test,trackers]'``).
"""

from __future__ import annotations

import json
import struct

import pandas as pd
import pytest
import yaml

from mutune import trackers

from .conftest import TINY, write_spec

SPEC = {**TINY, "search": {"n_trials": 2}, "target": {"width": 48}}
TRIALS = ("trial-0000", "trial-0001")
TARGET = "target-width48"


@pytest.fixture
def tracked(run_cli, workdir, monkeypatch):
    """Run the search + target with a tracker; returns (run dir, trials.csv, the target's result.yaml)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(workdir / "wandb-home" / key.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)

    def run(backend: str):
        spec = write_spec(workdir / "tiny.yaml", SPEC)
        r = run_cli("search", spec, "--tracker", backend)
        assert r.code == 0, r
        out = workdir / "runs" / "tiny"
        result = yaml.safe_load((out / TARGET / "result.yaml").read_text())
        return out, pd.read_csv(out / "trials.csv"), result

    return run


def _losses(table: pd.DataFrame) -> dict[str, float]:
    return {f"trial-{int(r.number):04d}": float(r.loss) for r in table.itertuples()}


def test_tensorboard_reads_back_trials_and_target(tracked):
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed: pip install 'mutune[tensorboard]'"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, table, target = tracked("tensorboard")
    for name, loss in [*_losses(table).items(), (TARGET, target["final_val_loss"])]:
        ea = EventAccumulator(str(run / "tensorboard" / name), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        assert [e.step for e in ea.Scalars("train/loss")] == [
            1,
            8,
        ]  # every log step (and the first, the last)
        assert {"train/lr", "train/tokens_per_s"} <= set(ea.Tags()["scalars"])
        val = ea.Scalars("val/loss")
        assert [e.step for e in val] == [4, 8] and val[-1].value == pytest.approx(loss, rel=1e-6)
        assert ea.Scalars("final/final_val_loss")[0].value == pytest.approx(loss, rel=1e-6)
        meta = ea.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        info = plugin_data_pb2.HParamsPluginData.FromString(meta).session_start_info
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
        assert {"lr", "init_std", "alpha_out", "status"} <= set(hparams) and hparams["status"] == "FINISHED"
        text = ea.Tensors("provenance/text_summary")[0].tensor_proto.string_val[0].decode()
        assert "mutune.spec_hash" in text or "mutune.best.spec_hash" in text
    trial_lr = {f"trial-{int(r.number):04d}": r.lr for r in table.itertuples()}
    ea = EventAccumulator(str(run / "tensorboard" / "trial-0001"))
    ea.Reload()
    meta = ea.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(meta).session_start_info
    assert info.hparams["lr"].number_value == pytest.approx(trial_lr["trial-0001"])


def test_mlflow_reads_back_trials_and_target(tracked):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'mutune[mlflow]'")
    from mlflow.tracking import MlflowClient

    run, table, target = tracked("mlflow")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {*TRIALS, TARGET}
    for name, loss in [*_losses(table).items(), (TARGET, target["final_val_loss"])]:
        r = runs[name]
        assert r.info.status == "FINISHED" and r.data.tags["mutune.status"] == "FINISHED"
        history = client.get_metric_history(r.info.run_id, "val/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [4, 8]
        assert r.data.metrics["final/final_val_loss"] == pytest.approx(loss, rel=1e-6)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [1, 8]
    for r in table.itertuples():
        got = runs[f"trial-{int(r.number):04d}"]
        assert float(got.data.params["lr"]) == pytest.approx(r.lr)  # MLflow keeps params as strings
        assert (
            got.data.tags["mutune.trial"] == str(int(r.number))
            and got.data.tags["mutune.job_type"] == "proxy-trial"
        )
    assert runs[TARGET].data.params["width"] == "48" and runs[TARGET].data.tags["mutune.job_type"] == "target"
    assert "mutune.best.trial_number" in runs[TARGET].data.tags


def _wandb_records(path):
    """The records of a W&B offline run file (``run-<id>.wandb``), parsed with wandb's own protobuf
    types. wandb 0.31 has no Python reader for its offline files any more (syncing is done by its Go
    core), so the framing (LevelDB-log style: a 7-byte header, 32 KiB blocks, chunks of crc32c(4) +
    length(2) + type(1)) is read here."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    if data[:4] != b":W&B" or struct.unpack("<HB", data[4:7]) != (0xBEE1, 0):
        pytest.skip(f"the offline run format changed ({data[:7]!r}); this reader knows wandb 0.31's")
    off, buf = 7, b""
    while off + 7 <= len(data):
        left = block - off % block
        if left < 7:
            off += left
            continue
        _, n, kind = struct.unpack("<IHB", data[off : off + 7])
        if kind == 0 and n == 0:
            off += left
            continue
        chunk, off = data[off + 7 : off + 7 + n], off + 7 + n
        if kind == 1:
            yield pb.Record.FromString(chunk)
        elif kind in (2, 3):
            buf += chunk
        elif kind == 4:
            yield pb.Record.FromString(buf + chunk)
            buf = b""


def _wandb_run(path) -> dict:
    out = {"config": {}, "history": [], "summary": {}}
    for r in _wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            row = {}
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                if item.value_json:
                    row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "summary":
            out["summary"].update(
                {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update}
            )
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def test_wandb_offline_reads_back_trials_and_target(tracked):
    pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install 'mutune[wandb]'")
    import wandb

    try:
        run, table, target = tracked("wandb")
    finally:
        wandb.teardown()  # its service process would outlive the test otherwise
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    runs = {r["name"]: r for r in map(_wandb_run, files)}
    assert set(runs) == {*TRIALS, TARGET}
    for name, loss in [*_losses(table).items(), (TARGET, target["final_val_loss"])]:
        r = runs[name]
        assert r["exit_code"] == 0 and r["summary"]["status"] == "FINISHED"
        assert r["summary"]["final_val_loss"] == pytest.approx(loss, rel=1e-6)
        val = [(h["_step"], h["val/loss"]) for h in r["history"] if "val/loss" in h]
        assert [s for s, _ in val] == [4, 8] and val[-1][1] == pytest.approx(loss, rel=1e-6)
        assert any("train/tokens_per_s" in h for h in r["history"])
    for r in table.itertuples():
        got = runs[f"trial-{int(r.number):04d}"]
        assert got["config"]["lr"] == pytest.approx(r.lr) and got["job_type"] == "proxy-trial"
        assert got["group"] == "tiny" and got["config"]["provenance"]["mutune.trial"] == str(int(r.number))
    assert runs[TARGET]["job_type"] == "target" and runs[TARGET]["config"]["width"] == 48


def test_a_missing_extra_is_a_one_line_error(run_cli, workdir, monkeypatch):
    spec = write_spec(workdir / "tiny.yaml", SPEC)
    monkeypatch.setitem(trackers.PACKAGES, "wandb", ("mutune_no_such_module", "wandb"))  # as if not installed
    r = run_cli("search", spec, "--tracker", "wandb")
    assert r.code == 2 and "tracker.backend" in r.err and "pip install 'mutune[wandb]'" in r.err
    r = run_cli("search", spec, "--tracker", "neptune")
    assert r.code == 2 and "tracker.backend" in r.err
    assert not (workdir / "runs" / "tiny" / "trials.csv").exists()  # refused before any trial ran
