"""Other people's models with no wrapper: nanoGPT's conventions and Hugging Face causal LMs built
from a local config, through coord-check, search --smoke and transfer; the readout multiplier
through the CLI path and through mutune.parametrize; a forward that reads values (.item())."""

from __future__ import annotations

import importlib.util
import math
import warnings

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

import mutune
from mutune import config, flops, models
from mutune.models import factory

from . import factory_models as fm
from .conftest import write_spec
from .test_checks import factory_spec

VOCAB = 256
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason="transformers is not installed (pip install -e '.[hf]'; CI installs it)"
)


def _pipeline(run_cli, workdir, fn: str, **model) -> dict:
    """coord-check, search --smoke (its gate passing), transfer to width 64; the best.yaml."""
    spec = write_spec(workdir / f"{fn}.yaml", {**factory_spec(fn, **model), "target": {"width": 64}})
    r = run_cli("coord-check", spec, "--smoke", "--seeds", "2")
    assert r.code == 0, r
    r = run_cli("search", spec, "--smoke", "--no-transfer")
    assert r.code == 0, r
    run = workdir / "runs" / "tiny-smoke"
    assert set(pd.read_csv(run / "checks" / "gate_coord_check_slopes.csv").verdict) == {"pass"}
    trials = pd.read_csv(run / "trials.csv")
    assert set(trials.state) == {"COMPLETE"} and (trials.flops > 0).all()
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "passed"
    r = run_cli("transfer", run)
    assert r.code == 0, r
    result = yaml.safe_load((run / "target-width64" / "result.yaml").read_text())
    assert result["hparams"] == best["hparams"] and math.isfinite(result["final_val_loss"])
    return best


def test_nanogpt_conventions_need_no_wrapper(run_cli, workdir):
    """forward(idx, targets) -> (logits, loss), logits of the last position only without targets,
    wte tied to lm_head, blocks in transformer.h: coord-check, search --smoke and transfer as is."""
    _pipeline(run_cli, workdir, "nanogpt")


@needs_transformers
def test_hugging_face_gpt2_needs_no_wrapper(run_cli, workdir):
    """GPT2LMHeadModel from a local GPT2Config (nothing downloaded): an output object with
    .logits, Conv1D (in, out) weights, wte tied to lm_head."""
    _pipeline(run_cli, workdir, "hf_gpt2")


@needs_transformers
def test_hugging_face_llama_passes_the_coord_check():
    spec = config.spec_from_dict(factory_spec("hf_llama"))
    res = mutune.checks.coord_check(spec, mults=mutune.checks.GATE_MULTS, seeds=2)
    assert res.passed and not res.warnings, res.message()
    layers = set(res.records.layer)
    assert {"model.layers.0", "model.layers.1", "model.layers.0.self_attn.logits", "model.norm"} <= layers


@pytest.mark.parametrize("fn", ["nanogpt", "conv_lm", "tuple_lm"])
def test_forward_contracts(fn):
    """A tensor, a (logits, ...) tuple, or (logits, loss) with targets: mutune's (logits, loss)."""
    spec = config.spec_from_dict(factory_spec(fn))
    model, _ = models.create(spec, spec.hparams, VOCAB)
    x, y = torch.randint(0, VOCAB, (2, 8)), torch.randint(0, VOCAB, (2, 8))
    logits, loss = model(x, y)
    assert logits.shape == (2, 8, VOCAB)
    torch.testing.assert_close(loss, F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1)))
    logits, loss = model(x)  # nanoGPT gives every position only when given targets: mutune passes some
    assert logits.shape == (2, 8, VOCAB) and loss is None


# ---------------------------------------------------------------------------------------------
# The readout multiplier: logits = W (x · α_out/m) + b, through both paths


def _raw_and_logits(model: torch.nn.Module, head: torch.nn.Linear, idx: torch.Tensor):
    """The readout's input before mutune's hook scales it, and the model's logits."""
    seen = {}
    h = head.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]), prepend=True)
    try:
        out = model(idx)
    finally:
        h.remove()
    logits = factory.logits_of(out, idx)
    return seen["x"], logits


CASES = {  # name -> (factory, readout module, kwargs): tied without bias (nanoGPT), untied with a bias
    "tied": (fm.nanogpt, "lm_head", {"seq_len": 16}),
    "untied_bias": (fm.conv_lm, "unembed", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("path", ["cli", "parametrize"])
def test_logits_are_scaled_by_one_over_m_and_the_bias_is_not(case, path):
    build, head_name, kw = CASES[case]
    base, width, idx = 32, 256, torch.randint(0, VOCAB, (2, 16))  # m = 8
    if path == "cli":
        spec = config.spec_from_dict(
            factory_spec(f"{build.__name__}", width=width, seq_len=16, base_width=base)
        )
        model, _ = models.create(spec, spec.hparams, VOCAB)
    else:
        torch.manual_seed(0)
        model = build(width, VOCAB, **kw)
        mutune.parametrize(model, base_width=base, factory=lambda w: build(w, VOCAB, **kw), init_std=0.05)
    head = model.get_submodule(head_name)
    if head.bias is not None:
        with torch.no_grad():
            head.bias.fill_(1.0)  # a non-zero readout bias, which must keep its size
    x, logits = _raw_and_logits(model, head, idx)
    last = logits[:, -1] if logits.ndim == 3 else logits
    expected = F.linear(x / 8, head.weight, head.bias)[:, -1]
    torch.testing.assert_close(last, expected)
    unscaled = F.linear(x, head.weight, head.bias)[:, -1]
    bias = head.bias if head.bias is not None else 0.0
    ratio = ((last - bias).abs().mean() / (unscaled - bias).abs().mean()).item()
    assert ratio == pytest.approx(1 / 8, rel=1e-4)


def test_parametrize_refuses_a_readout_it_cannot_hook():
    """Logits from F.linear(x, emb.weight): no Linear to hook, an error that says what to do."""
    model = fm.embedding_readout_lm(64, VOCAB)
    with pytest.raises(mutune.config.SpecError, match="nn.Linear") as e:
        mutune.parametrize(model, base_width=32, factory=lambda w: fm.embedding_readout_lm(w, VOCAB))
    assert e.value.key == "scale_readout"


# ---------------------------------------------------------------------------------------------
# FLOPs of a forward that cannot run on the meta device


def test_a_forward_calling_item_completes_search_smoke(run_cli, workdir):
    """.item() and torch.equal in forward: the meta-device FLOP count falls back to a real
    forward (the model is small), so the search completes with the FLOPs measured."""
    spec = write_spec(workdir / "item.yaml", factory_spec("item_lm"))
    r = run_cli("search", spec, "--smoke", "--no-transfer")
    assert r.code == 0, r
    trials = pd.read_csv(workdir / "runs" / "tiny-smoke" / "trials.csv")
    assert set(trials.state) == {"COMPLETE"} and (trials.flops > 0).all()
    conv = config.spec_from_dict(factory_spec("conv_lm", factory_kwargs={"depth": 1}))
    item = config.spec_from_dict(factory_spec("item_lm"))
    assert flops.cost(item).flops_per_token == flops.cost(conv).flops_per_token  # the same network


def test_flops_too_big_to_measure_are_unknown_with_a_warning(monkeypatch):
    monkeypatch.setattr(factory, "REAL_FORWARD_MAX_PARAMS", 0)
    monkeypatch.setattr(factory, "_measured", {})
    spec = config.spec_from_dict(factory_spec("item_lm"))
    with pytest.warns(UserWarning, match="FLOPs of tests.factory_models:item_lm at width 32 are unknown"):
        cost = flops.cost(spec)
    assert math.isnan(cost.flops_per_token) and math.isnan(cost.total_flops)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # measured once per shape: no second warning
        assert math.isnan(flops.cost(spec).total_flops)
