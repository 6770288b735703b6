"""The µP rule table, checked on named parameters, and µP == SP at the base width."""

from __future__ import annotations

import math

import pytest
import torch

from mutune import config, models, parametrize
from mutune.mup import optim
from mutune.mup import parametrizations as pz
from mutune.train import train

SIGMA = 0.05


def gpt_spec(width=256, base=64, **model):
    heads = {"head_dim": 32} if model.get("family", "gpt") == "gpt" else {}  # a key of the gpt family
    return config.spec_from_dict(
        {
            "model": {"width": width, "base_width": base, "depth": 1, "seq_len": 16, **heads, **model},
            "hparams": {
                "init_std": SIGMA,
                "lr": 0.01,
                "weight_decay": 0.1,
                "alpha_out": 2.0,
                "alpha_attn": 1.5,
            },
            "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "eval_every": 3, "eval_batches": 2},
        }
    )


def groups_by_name(spec, optimizer):
    model, infos = models.create(spec, spec.hparams, 256)
    groups = optim.param_groups(model, infos, spec.hparams, spec.model.parametrization, optimizer, eps=1e-8)
    return model, infos, {n: g for g in groups for n in g["names"]}


# name -> (role, init std, AdamW lr mult, AdamW wd mult, SGD lr mult, SGD wd mult) at width 256, base 64 (m = 4)
MUP_TABLE = {
    "wte.weight": ("embedding", SIGMA, 1, 1, 4, 1 / 4),
    "wpe.weight": ("embedding", SIGMA, 1, 1, 4, 1 / 4),
    "h.0.attn.c_attn.weight": ("hidden", SIGMA / 2, 1 / 4, 4, 1, 1),  # fan_in 256 = 4x base
    "h.0.attn.c_proj.weight": ("hidden", SIGMA / 2, 1 / 4, 4, 1, 1),
    "h.0.mlp.c_fc.weight": ("hidden", SIGMA / 2, 1 / 4, 4, 1, 1),
    "h.0.mlp.c_proj.weight": ("hidden", SIGMA / 4, 1 / 4, 4, 1, 1),  # fan_in 1024: std σ·√(64/1024)
    "h.0.ln_1.weight": ("vector", None, 1, 0, 4, 0),
    "ln_f.weight": ("vector", None, 1, 0, 4, 0),
    "lm_head.weight": ("readout", SIGMA, 1, 1, 4, 1 / 4),  # µP: constant std, α_out/m in forward
}


@pytest.mark.parametrize("name", sorted(MUP_TABLE))
def test_mup_rules_on_named_parameters(name):
    spec = gpt_spec()
    role, std, a_lr, a_wd, s_lr, s_wd = MUP_TABLE[name]
    model, infos, adamw = groups_by_name(spec, "adamw")
    _, _, sgd = groups_by_name(spec, "sgd")
    assert infos[name].role == role
    assert adamw[name]["lr"] == pytest.approx(0.01 * a_lr)
    assert adamw[name]["weight_decay"] == pytest.approx(0.1 * a_wd)
    # Adam ε ∝ 1/m on every parameter with a width dim (TP5 App. B.3; CompleteP's fixed code)
    assert adamw[name]["eps"] == pytest.approx(1e-8 / 4)
    assert sgd[name]["lr"] == pytest.approx(0.01 * s_lr)
    assert sgd[name]["weight_decay"] == pytest.approx(0.1 * s_wd)
    p = dict(model.named_parameters())[name]
    if std is None:
        assert torch.all(p == 1.0)  # LayerNorm gains start at one
    else:
        assert p.std().item() == pytest.approx(std, rel=0.05)
        assert pz.get("mup").rule(infos[name], "adam", spec.hparams.init_std, 64).std == pytest.approx(std)


def test_sp_rules_are_flat_except_fan_in_init():
    spec = gpt_spec(parametrization="sp")
    model, infos, adamw = groups_by_name(spec, "adamw")
    _, _, sgd = groups_by_name(spec, "sgd")
    for name in infos:
        assert adamw[name]["lr"] == pytest.approx(0.01)
        assert sgd[name]["lr"] == pytest.approx(0.01)
    # SP readout: 1/fan_in variance, so it shrinks with width (µP keeps it constant)
    head = dict(model.named_parameters())["lm_head.weight"]
    assert head.std().item() == pytest.approx(SIGMA / 2, rel=0.05)


def test_forward_multipliers():
    hp = gpt_spec().hparams
    alphas = {"alpha_in": hp.alpha_in, "alpha_out": hp.alpha_out, "alpha_attn": hp.alpha_attn}
    mup = parametrize.multipliers("mup", 256, 64, **alphas, head_dim=32, base_head_dim=32)
    sp = parametrize.multipliers("sp", 256, 64, **alphas, head_dim=32, base_head_dim=32)
    assert mup.output == pytest.approx(2.0 / 4) and sp.output == pytest.approx(2.0)
    assert mup.attn == pytest.approx(1.5 / math.sqrt(32)) == sp.attn  # fixed head_dim: 1/d == 1/√d up to α
    # width grown through head_dim (fixed head count): µP uses α·√d_base/d, SP α/√d
    mup = parametrize.multipliers("mup", 256, 64, **alphas, head_dim=128, base_head_dim=32)
    sp = parametrize.multipliers("sp", 256, 64, **alphas, head_dim=128, base_head_dim=32)
    assert mup.attn == pytest.approx(1.5 * math.sqrt(32) / 128)
    assert sp.attn == pytest.approx(1.5 / math.sqrt(128))
    model = models.build(gpt_spec(n_head=2, head_dim=None), hp, 256)
    assert model.h[0].attn.attn_scale == pytest.approx(1.5 * math.sqrt(32) / 128)


def test_mlp_classification_and_rules():
    spec = config.spec_from_dict(
        {
            "model": {"family": "mlp", "width": 512, "base_width": 128, "depth": 2, "seq_len": 4},
            "hparams": {"init_std": SIGMA},
        }
    )
    model, infos, adamw = groups_by_name(spec, "adamw")
    _, _, sgd = groups_by_name(spec, "sgd")
    assert {n: i.role for n, i in infos.items()} == {
        "fc_in.weight": "input",
        "hidden.0.weight": "hidden",
        "readout.weight": "readout",
    }
    assert adamw["fc_in.weight"]["lr"] == pytest.approx(spec.hparams.lr)
    assert adamw["hidden.0.weight"]["lr"] == pytest.approx(spec.hparams.lr / 4)
    assert sgd["fc_in.weight"]["lr"] == pytest.approx(spec.hparams.lr * 4)
    assert sgd["readout.weight"]["lr"] == pytest.approx(spec.hparams.lr * 4)
    assert model.cfg.output_mult == pytest.approx(spec.hparams.alpha_out / 4)


def test_tied_embedding_is_one_parameter_with_vector_rules():
    spec = gpt_spec(tie_embeddings=True)
    model, infos, sgd = groups_by_name(spec, "sgd")
    assert model.lm_head.weight is model.wte.weight
    assert "lm_head.weight" not in infos and infos["wte.weight"].tied_readout
    assert sgd["wte.weight"]["lr"] == pytest.approx(0.01 * 4)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("model", ["gpt", "gpt-tied", "gpt-nhead", "mlp"])
def test_mup_equals_sp_at_base_width(model, optimizer):
    """TP5 App. H: at width == base_width, α's at 1 and zero-inits off, µP is its SP twin, exactly."""
    shape = {
        "gpt": {},
        "gpt-tied": {"tie_embeddings": True},
        "gpt-nhead": {"head_dim": None, "n_head": 2},
        "mlp": {"family": "mlp", "depth": 3},
    }[model]
    losses = {}
    for p in ("mup", "sp"):
        spec = gpt_spec(width=64, base=64, parametrization=p, **shape)
        spec = config.spec_from_dict(
            spec.to_dict(),
            [
                f"train.optimizer={optimizer}",
                "hparams.alpha_out=1",
                "hparams.alpha_attn=1",
                "hparams.weight_decay=0.1",
            ],
        )
        r = train(spec, spec.hparams)
        assert not r.diverged
        losses[p] = [c["val_loss"] for c in r.curve]
    assert losses["mup"] == losses["sp"]


def test_mup_differs_from_sp_off_base_width():
    losses = {}
    for p in ("mup", "sp"):
        spec = gpt_spec(width=128, base=64, parametrization=p)
        losses[p] = train(spec, spec.hparams).final_val_loss
    assert losses["mup"] != losses["sp"]


def test_schedule_scales_group_lrs_relatively():
    spec = gpt_spec()
    model, infos = models.create(spec, spec.hparams, 256)
    groups = optim.param_groups(model, infos, spec.hparams, "mup", "adamw")
    opt = optim.make_optimizer(groups, spec.hparams, "adamw")
    from mutune.train import lr_factor

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, spec.train))
    for _ in range(4):
        opt.step()
        sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(spec.hparams.lr * g["lr_mult"] * lr_factor(4, spec.train))


def test_too_many_width_dims_is_an_error():
    class Cube(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.t = torch.nn.Parameter(torch.zeros(w, w, w))

    with pytest.raises(config.SpecError, match="3 dims"):
        parametrize.classify(Cube, 8, 4)


def test_adam_eps_follows_the_gradient_of_every_width_role():
    """Why Adam's ε is ε/m on every parameter with a width dim, not on hidden matrices only: the
    gradient RMS of every role shrinks like 1/m (measured here at init, widths 64 and 512), and ε is
    compared with √v, the gradient's size (TP5 App. B.3)."""
    import numpy as np

    from mutune import data

    def grad_rms_and_eps(width):
        spec = config.spec_from_dict(
            {
                "model": {"width": width, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 64},
                "hparams": {"init_std": 0.05},
            }
        )
        model, infos = models.create(spec, spec.hparams, 256, seed=0)
        x, y = data.get_batch(data.load(spec.data, 65).train, 8, 64, np.random.default_rng(0))
        model(x, y)[1].backward()
        groups = optim.param_groups(model, infos, spec.hparams, "mup", "adamw", eps=1.0)
        eps = {n: g["eps"] for g in groups for n in g["names"]}
        by_role: dict[str, list] = {}
        for n, p in model.named_parameters():
            by_role.setdefault(infos[n].role, []).append((p.grad.pow(2).mean().sqrt().item(), eps[n]))
        return {r: (math.exp(np.mean([math.log(g) for g, _ in v])), v[0][1]) for r, v in by_role.items()}

    narrow, wide = grad_rms_and_eps(64), grad_rms_and_eps(512)
    assert set(narrow) == {"embedding", "hidden", "readout", "vector"}
    for role in narrow:
        grad_ratio = math.log2(wide[role][0] / narrow[role][0])
        eps_ratio = math.log2(wide[role][1] / narrow[role][1])
        assert abs(grad_ratio - (-3)) < 0.5, (role, grad_ratio)  # the gradient shrinks like 1/m, m = 8
        assert abs(eps_ratio - grad_ratio) < 0.5, (role, eps_ratio, grad_ratio)  # and so does ε
