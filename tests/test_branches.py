"""WSD schedules and cooldown branches (issue 26): the schedule's multipliers, and one run that
gives the loss of a run of each shorter length, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from mutune import config
from mutune.train import lr_factor, train

from .conftest import write_spec

BASE = {
    "model": {"width": 32, "base_width": 32, "depth": 2, "head_dim": 16, "seq_len": 32},
    "train": {
        "steps": 40,
        "batch_size": 4,
        "warmup_steps": 4,
        "schedule": "wsd",
        "eval_every": 20,
        "eval_batches": 2,
    },
}


def spec(*over: str) -> config.Spec:
    return config.spec_from_dict(BASE, list(over))


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_wsd_multipliers(shape):
    t = spec(f"train.decay_shape={shape}", "train.min_lr_ratio=0.1", "train.decay_fraction=0.25").train
    f = [lr_factor(s, t) for s in range(40)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]  # warmup
    assert f[4:30] == [1.0] * 26  # stable until the last 25% (10 steps)
    p = [(s - 30 + 1) / 10 for s in range(30, 40)]
    want = [1 - 0.9 * (math.sqrt(x) if shape == "1-sqrt" else x) for x in p]
    assert f[30:] == pytest.approx(want, rel=1e-15) and f[-1] == pytest.approx(0.1)


def test_wsd_keeps_the_mup_group_ratios_every_step():
    """The schedule scales every group's LR relatively (the LR-ratio guard runs at every log step)."""
    s = spec("model.width=64", "train.steps=20", "train.warmup_steps=2", "train.eval_every=10")
    assert math.isfinite(train(s, s.hparams).final_val_loss)


def test_a_branch_loss_is_the_shorter_runs_bit_for_bit():
    torch.set_num_threads(1)
    long = spec("train.branches=[0.25, 0.5, 1.0]")
    r = train(long, long.hparams)
    by_steps = {b["steps"]: b for b in r.branches}
    assert sorted(by_steps) == [10, 20, 40]
    for steps in (10, 20):
        short = spec(f"train.steps={steps}")
        assert by_steps[steps]["val_loss"] == train(short, short.hparams).final_val_loss  # exact
        assert by_steps[steps]["steps_trained"] == round(0.2 * steps)  # only its cooldown
    plain = spec()
    assert r.final_val_loss == by_steps[40]["val_loss"] == train(plain, plain.hparams).final_val_loss


def test_branches_resume_without_training_one_twice(tmp_path, monkeypatch):
    """A run killed after its first branch (at its first checkpoint, step 12) and resumed gives the
    uninterrupted run's every number, and records each branch once."""
    torch.set_num_threads(1)
    s = spec("train.branches=[0.25, 0.5, 1.0]", "train.checkpoint_every=12")
    whole = train(s, s.hparams, out_dir=tmp_path / "whole")
    from mutune.train import checkpoint

    real = checkpoint.save

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the step-12 checkpoint (the 10-step branch done)

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(s, s.hparams, out_dir=tmp_path / "part")
    monkeypatch.setattr(checkpoint, "save", real)
    resumed = train(s, s.hparams, out_dir=tmp_path / "part", resume=True)
    assert [(b["steps"], b["val_loss"]) for b in resumed.branches] == [
        (b["steps"], b["val_loss"]) for b in whole.branches
    ]
    assert resumed.final_val_loss == whole.final_val_loss
    rows = (tmp_path / "part" / "metrics.csv").read_text().splitlines()
    branch = rows[0].split(",").index("branch")
    assert sorted(int(r.split(",")[branch]) for r in rows[1:] if r.split(",")[branch]) == [10, 20]


@pytest.mark.parametrize(
    "over, key",
    [
        (["train.branches=[0.5, 0.25]"], "train.branches[1]"),
        (["train.branches=[0.5, 1.5]"], "train.branches[1]"),
        (["train.branches=[0.5, 1.0]", "train.schedule=cosine"], "train.branches"),
        (["train.branches=[0.05, 1.0]"], "train.branches[0]"),  # its cooldown would start in the warmup
        (["train.decay_fraction=0.95"], "train.decay_fraction"),
    ],
)
def test_bad_schedules_are_one_line_naming_the_key(run_cli, workdir, over, key):
    path = write_spec(workdir / "s.yaml", BASE)
    r = run_cli("show-config", path, *over)
    assert r.code == 2 and r.err.startswith(f"error: {key}:") and len(r.err.splitlines()) == 1, r


def test_laws_from_branches_cost_less_than_separate_runs(run_cli, workdir):
    """`search.laws.steps` under WSD: each LR's horizons from one branched run, two seeds by default."""
    from .conftest import CONFIGS

    r = run_cli(
        "search",
        CONFIGS / "quickstart.yaml",
        "--smoke",
        "train.schedule=wsd",
        "search.laws.steps=[0.5,1.0]",
        "--no-transfer",
    )
    assert r.code == 0, r
    import yaml

    law = yaml.safe_load((workdir / "runs" / "quickstart-smoke" / "best.yaml").read_text())["laws"]["steps"]
    assert law["branched"] and law["seeds"] == 2
    assert 0 < law["flops"] < law["separate_flops"]
    assert "from WSD branches" in r.out
    rows = (workdir / "runs" / "quickstart-smoke" / "laws" / "runs.csv").read_text().splitlines()[1:]
    assert {r.split(",")[2] for r in rows} == {"0.5", "1.0"}  # a row per multiple, from one run each
