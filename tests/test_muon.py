"""Muon under µP: its rule row, the combined optimizer, the LR-ratio guard over both, the coord check."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mutune import checks, config, models
from mutune.mup import optim, rules
from mutune.mup import parametrizations as pz
from mutune.mup.optim import MuonWithAdamW, MuPError
from mutune.mup.shapes import ParamInfo
from mutune.train import train

from .conftest import CONFIGS, TINY


def muon_spec(width=128, base=32, **over):
    return config.spec_from_dict(
        {
            **TINY,
            "model": {**TINY["model"], "width": width, "base_width": base},
            "train": {**TINY["train"], "optimizer": "muon"},
            "hparams": {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.95},
        },
        [f"{k}={v}" for k, v in over.items()],
    )


def groups_of(spec):
    model, infos = models.create(spec, spec.hparams, 256)
    groups = optim.param_groups(model, infos, spec.hparams, spec.model.parametrization, "muon", eps=1e-8)
    return model, infos, groups


def test_hidden_matrices_get_muons_width_rule_and_the_rest_adamws():
    _, infos, groups = groups_of(muon_spec(width=128, base=32))  # m = 4
    by_name = {n: g for g in groups for n in g["names"]}
    for name, info in infos.items():
        g = by_name[name]
        if info.role == "hidden":
            assert g["kind"] == "muon" and "eps" not in g
            assert g["lr"] == pytest.approx(0.01 / 2)  # η·m^-1/2
            assert g["weight_decay"] == pytest.approx(0.1 * 2)  # LR·λ constant in width
        else:
            assert g["kind"] == "adam" and g["lr"] == pytest.approx(0.01)  # AdamW's µP: η for these roles
            assert g["eps"] == pytest.approx(1e-8 / 4)  # AdamW's ε/m


def test_at_the_base_width_every_multiplier_is_one():
    for parametrization in ("mup", "sp"):
        _, _, groups = groups_of(muon_spec(width=32, base=32, **{"model.parametrization": parametrization}))
        assert {g["lr_mult"] for g in groups} == {1.0}


def test_sp_has_no_width_rule():
    _, _, groups = groups_of(muon_spec(**{"model.parametrization": "sp"}))
    assert {g["lr_mult"] for g in groups} == {1.0}


def test_a_matrix_whose_dims_grow_apart_is_refused():
    info = ParamInfo("w", "hidden", (64, 256), (32, 64), (0, 1), 4.0, 2.0, 256, 64, "linear")
    with pytest.raises(ValueError, match="grow together"):
        pz.get("mup").scaling(info, "muon")
    assert pz.get("mup").scaling(info, "adam")[0] == 0.25  # AdamW's rule does not assume it


def test_one_schedule_drives_both_optimizers_and_the_guard_covers_both():
    spec = muon_spec()
    _, _, groups = groups_of(spec)
    opt = optim.make_optimizer(groups, spec.hparams, "muon")
    assert isinstance(opt, MuonWithAdamW) and set(opt.optimizers) == {"muon", "adamw"}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.25)
    for sub in opt.optimizers.values():
        for g in sub.param_groups:
            assert g["lr"] == pytest.approx(0.01 * g["lr_mult"] * 0.25)
    optim.check_param_groups(opt)
    assert sched.get_last_lr()[0] == pytest.approx(0.01 * opt.param_groups[0]["lr_mult"] * 0.25)
    for kind in ("muon", "adamw"):
        fresh = optim.make_optimizer(groups_of(spec)[2], spec.hparams, "muon")
        for g in fresh.optimizers[kind].param_groups:
            g["lr"] = 1e-3  # one absolute LR in one of the two optimizers
        with pytest.raises(MuPError, match="no longer follow"):
            optim.check_param_groups(fresh)


def test_muon_run_resumes_bit_identically(tmp_path):
    spec = muon_spec(**{"train.steps": 12, "train.eval_every": 3, "train.checkpoint_every": 6})
    full = train(spec, spec.hparams, out_dir=tmp_path / "full")

    def stop_at_9(step, loss):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, spec.hparams, out_dir=tmp_path / "cut", on_eval=stop_at_9)  # checkpoint at step 6
    resumed = train(spec, spec.hparams, out_dir=tmp_path / "cut", resume=True)
    losses = [(r["step"], r["val_loss"]) for r in full.curve]
    assert [(r["step"], r["val_loss"]) for r in resumed.curve] == losses
    assert resumed.final_val_loss == full.final_val_loss


def test_search_and_coord_check_through_the_cli(run_cli, workdir):
    quick = CONFIGS / "quickstart.yaml"
    r = run_cli("search", quick, "--smoke", "train.optimizer=muon", "--no-transfer")
    assert r.code == 0, r
    r = run_cli("coord-check", quick, "--smoke", "train.optimizer=muon", "--compare", "sp")
    assert r.code == 0, r
    slopes = pd.read_csv(workdir / "runs" / "quickstart-smoke" / "checks" / "coord_check_slopes.csv")
    verdict = slopes.groupby("parametrization").verdict.first()
    assert verdict["mup"] == "pass" and verdict["sp"] == "fail"


def test_coord_check_catches_muon_without_its_width_rule(monkeypatch):
    spec = config.smoke(config.load_spec(CONFIGS / "quickstart.yaml", ["train.optimizer=muon"]))
    assert checks.coord_check(spec, seeds=2).passed
    monkeypatch.setitem(pz.MUP.table, ("muon", "hidden"), rules.RoleRule())  # Muon's LR left flat in width
    broken = checks.coord_check(spec, seeds=2)
    assert not broken.passed
    assert broken.largest_slope > checks.THRESHOLD and not math.isnan(broken.largest_slope)
