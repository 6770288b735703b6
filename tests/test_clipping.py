"""Gradient clipping that is the same at every width: the norm is taken as at the base width."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mutune import config, data
from mutune.mup import optim
from mutune.train import build, train_step
from mutune.train.parallel import Distributed

from .conftest import TINY


def spec_at(width: int, *overrides: str) -> config.Spec:
    return config.spec_from_dict(
        {**TINY, "model": {**TINY["model"], "width": width, "depth": 2}, "hparams": {"lr": 0.004}},
        ["train.batch_size=8", "train.warmup_steps=0", *overrides],
    )


def _norms_after(spec: config.Spec, steps: int) -> tuple[float, float]:
    """(plain global norm, base-width norm) of the gradient after ``steps`` unclipped AdamW steps."""
    run = build(spec, spec.hparams, Distributed(), torch.device("cpu"))
    t = spec.train
    for step in range(steps + 1):
        x, y = data.get_batch(run.corpus.train, t.batch_size, spec.model.seq_len, run.rng, run.device)
        _, loss = run.model(x, y)
        loss.backward()
        if step == steps:
            break
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
    plain = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in run.model.parameters()]))
    return plain.item(), optim.grad_norm(run.opt).item()


def test_the_base_width_norm_stays_put_while_the_plain_norm_falls():
    """After 5 steps at widths 32 (the base) and 512 (m = 16): torch's global norm falls (the
    vector-like parameters' gradients shrink like 1/√m in norm), the base-width norm does not."""
    plain_32, base_32 = _norms_after(spec_at(32), 5)
    plain_512, base_512 = _norms_after(spec_at(512), 5)
    assert plain_32 == pytest.approx(base_32)  # at the base width they are one and the same
    assert plain_512 < 0.7 * plain_32
    assert base_512 == pytest.approx(base_32, rel=0.25)


def test_train_step_clips_by_the_base_width_norm():
    """One SGD step (no momentum, no decay) at width 256 with a threshold between the plain and
    the base-width norm: the update is lr · g · min(1, clip / base-width norm)."""
    spec = spec_at(256, "train.optimizer=sgd", "hparams.momentum=0.0")
    ref = build(spec, spec.hparams, Distributed(), torch.device("cpu"))
    rng = copy.deepcopy(ref.rng)
    x, y = data.get_batch(ref.corpus.train, spec.train.batch_size, spec.model.seq_len, rng, ref.device)
    _, loss = ref.model(x, y)
    loss.backward()
    plain = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.model.parameters()])).item()
    base = optim.grad_norm(ref.opt).item()
    assert plain < base
    clip = math.sqrt(plain * base)  # torch's norm would not clip; the base-width norm does
    run = build(spec.edit({"train.grad_clip": clip}), spec.hparams, Distributed(), torch.device("cpu"))
    run.fwd = run.model
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    lrs = [g["lr"] for g in run.opt.param_groups]  # the schedule moves them after the step
    train_step(run)
    grads = {n: p.grad for n, p in ref.model.named_parameters()}
    coef = clip / (base + 1e-6)
    for lr, g in zip(lrs, run.opt.param_groups, strict=True):
        for name, p in zip(g["names"], g["params"], strict=True):
            expected = before[name] - lr * coef * grads[name]
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_clip_scales_by_role():
    spec = spec_at(128)
    run = build(spec, spec.hparams, Distributed(), torch.device("cpu"))
    scale = {n: g["clip_scale"] for g in run.opt.param_groups for n in g["names"]}
    assert scale["h.0.attn.c_attn.weight"] == 1.0  # hidden: both dims grow
    assert (
        scale["wte.weight"] == scale["lm_head.weight"] == scale["h.0.ln_1.weight"] == pytest.approx(2.0)
    )  # √4
    sp = build(spec.edit({"model.parametrization": "sp"}), spec.hparams, Distributed(), torch.device("cpu"))
    assert {g["clip_scale"] for g in sp.opt.param_groups} == {1.0}
