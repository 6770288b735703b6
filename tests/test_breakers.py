"""Silent µP breakers, detected with the reason: absolute-LR schedules, uncovered optimizers.

(A readout without its 1/m multiplier and embeddings tied to a readout are in test_checks.py and
test_factory.py: the coord-check gate, and the classification-time refusals.)
"""

from __future__ import annotations

import pytest
import torch

from mutune import config, models, parametrize
from mutune.config import SpecError
from mutune.mup import optim
from mutune.mup import parametrizations as pz
from mutune.parametrize import MuPError
from mutune.train import lr_factor

from .conftest import TINY


def optimizer_of(spec: config.Spec) -> torch.optim.Optimizer:
    model, infos = models.create(spec, spec.hparams, 256)
    m = spec.model
    groups = optim.param_groups(model, infos, spec.hparams, m.parametrization, spec.train.optimizer)
    return optim.make_optimizer(groups, spec.hparams, spec.train.optimizer)


def wide(*overrides: str) -> config.Spec:
    return config.spec_from_dict(TINY, ["model.width=128", *overrides])


def test_relative_schedules_keep_the_ratios():
    spec = wide()
    opt = optimizer_of(spec)
    parametrize.check_param_groups(opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, spec.train))
    for _ in range(5):
        opt.step()
        sched.step()
        parametrize.check_param_groups(opt)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        opt.step()
        cos.step()
    parametrize.check_param_groups(opt)


def test_one_cycle_with_a_float_max_lr_is_caught():
    """OneCycleLR(max_lr=float) sets the same LR on every group, which silently turns µP into SP."""
    opt = optimizer_of(wide())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    opt.step()
    sched.step()
    with pytest.raises(MuPError, match=r"ratio 1, expected 0.25\)"):
        parametrize.check_param_groups(opt)


def test_a_loop_setting_one_lr_on_all_groups_is_caught():
    opt = optimizer_of(wide())
    for g in opt.param_groups:
        g["lr"] = 1e-3
    with pytest.raises(MuPError, match="no longer follow their µP multipliers"):
        parametrize.check_param_groups(opt)


def test_collapsed_ratios_are_harmless_in_sp_and_at_the_base_width():
    """With every multiplier 1 there is nothing to collapse: no false alarm."""
    for spec in (wide("model.parametrization=sp"), config.spec_from_dict(TINY)):
        opt = optimizer_of(spec)
        for g in opt.param_groups:
            g["lr"] = 1e-3
        parametrize.check_param_groups(opt)


def test_optimizers_without_rules_are_refused():
    spec = wide()
    model, infos = models.create(spec, spec.hparams, 256)
    info = next(iter(infos.values()))
    for name in ("lion", "adam", "shampoo"):
        with pytest.raises(ValueError, match="µP rules are implemented for adamw, sgd"):
            optim.param_groups(model, infos, spec.hparams, "mup", name)
    for kind in ("lion", "shampoo"):
        with pytest.raises(ValueError, match="no µP rules for optimizer kind"):
            pz.get("mup").rule(info, kind, spec.hparams.init_std, 32)
    with pytest.raises(ValueError):
        optim.make_optimizer([], spec.hparams, "lion")
    groups = optim.param_groups(model, infos, spec.hparams, "mup", "adamw")
    with pytest.raises(MuPError, match="Adagrad is not covered"):
        parametrize.check_param_groups(torch.optim.Adagrad(groups, lr=0.01))
    with pytest.raises(SpecError) as e:
        config.spec_from_dict(TINY, ["train.optimizer=lion"])
    assert e.value.key == "train.optimizer"


def test_groups_not_built_by_mutune_are_refused():
    spec = wide()
    model, _ = models.create(spec, spec.hparams, 256)
    with pytest.raises(MuPError, match="no lr_mult"):
        parametrize.check_param_groups(torch.optim.AdamW(model.parameters(), lr=0.01))
