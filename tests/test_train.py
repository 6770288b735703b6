"""The trainer: determinism, schedules, divergence, outputs."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml

from mutune import config
from mutune.train import lr_factor, train

from .conftest import TINY


def tiny(**overrides):
    return config.spec_from_dict(TINY, [f"{k}={v}" for k, v in overrides.items()])


def test_same_seed_same_losses_and_seed_matters():
    a, b = train(tiny(), tiny().hparams), train(tiny(), tiny().hparams)
    assert [c["val_loss"] for c in a.curve] == [c["val_loss"] for c in b.curve]
    c = train(tiny(seed=1), tiny().hparams)
    assert c.final_val_loss != a.final_val_loss


def test_result_accounts_tokens_and_flops():
    spec = tiny()
    r = train(spec, spec.hparams)
    assert r.steps == 8 and r.tokens == 8 * 4 * 32
    assert r.flops > 0 and r.params > 0 and not r.diverged
    assert [c["step"] for c in r.curve] == [4, 8]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules(schedule):
    t = config.TrainSpec(steps=100, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    assert lr_factor(0, t) == pytest.approx(0.1)
    assert lr_factor(9, t) == pytest.approx(1.0)
    end = lr_factor(100, t)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.1)
    mid = lr_factor(55, t)
    assert 0.1 < mid <= 1.0


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_huge_lr_ends_as_diverged_not_a_crash(optimizer):
    spec = tiny(**{"hparams.lr": 1e4, "train.optimizer": optimizer})
    r = train(spec, spec.hparams)
    assert r.diverged and math.isnan(r.final_val_loss)
    assert "step" in r.reason


def test_out_dir_gets_metrics_result_and_checkpoint(tmp_path):
    spec = tiny()
    r = train(spec, spec.hparams, out_dir=tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows and {"step", "train_loss", "val_loss"} <= set(rows[0])
    assert float([x for x in rows if x["val_loss"]][-1]["val_loss"]) == pytest.approx(
        r.final_val_loss, rel=1e-5
    )
    doc = yaml.safe_load((tmp_path / "result.yaml").read_text())
    assert doc["hparams"]["lr"] == spec.hparams.lr and doc["final_val_loss"] == r.final_val_loss
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 8 and "model" in ckpt and "optimizer" in ckpt


def test_on_eval_can_stop_a_run():
    seen = []

    class Stop(Exception):
        pass

    def on_eval(step, loss):
        seen.append(step)
        raise Stop

    with pytest.raises(Stop):
        spec = tiny()
        train(spec, spec.hparams, on_eval=on_eval)
    assert seen == [4]
