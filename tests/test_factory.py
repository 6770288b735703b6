"""Bring your own model: model.family factory, through search --smoke and transfer; its errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

import mutune
from mutune import config, data, flops, models
from mutune.config import SpecError
from mutune.mup import optim
from mutune.mup import parametrizations as pz
from mutune.train import train

from .conftest import CONFIGS, write_spec
from .test_checks import factory_spec

VOCAB = 256


def spec_of(fn: str, overrides: list[str] = (), **model) -> config.Spec:
    return config.spec_from_dict(factory_spec(fn, **model), list(overrides))


def test_user_cnn_goes_through_search_smoke_and_transfer(run_cli, workdir):
    """A residual CNN written only in tests/, with a head named `unembed`: classified, made µP,
    coord-checked (the gate passes), searched, and transferred with its hyperparameters unchanged."""
    spec = write_spec(workdir / "cnn.yaml", {**factory_spec("conv_lm"), "target": {"width": 64}})
    r = run_cli("search", spec, "--smoke", "--no-transfer")
    assert r.code == 0, r
    run = workdir / "runs" / "tiny-smoke"
    assert set(pd.read_csv(run / "checks" / "gate_coord_check_slopes.csv").verdict) == {"pass"}
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "passed"
    assert best["provenance"]["model_family"] == "factory"
    assert set(pd.read_csv(run / "trials.csv").state) == {"COMPLETE"}
    r = run_cli("transfer", run)
    assert r.code == 0, r
    result = yaml.safe_load((run / "target-width64" / "result.yaml").read_text())
    assert result["hparams"] == best["hparams"] and result["final_val_loss"] > 0
    cfg = yaml.safe_load((run / "target-width64" / "config.yaml").read_text())
    assert cfg["model"]["factory"] == "tests.factory_models:conv_lm" and cfg["model"]["width"] == 64


def test_shipped_factory_config_builds_and_trains(monkeypatch):
    """configs/factory.yaml names examples/my_model.py, imported from the repository root."""
    monkeypatch.chdir(CONFIGS.parent)
    spec = config.smoke(config.load_spec(CONFIGS / "factory.yaml", ["train.steps=4", "train.warmup_steps=2"]))
    models.validate(spec, spec.hparams, VOCAB)
    result = train(spec, spec.hparams)
    assert not result.diverged and result.final_val_loss < 6.0


def test_classification_and_rules_of_a_user_model():
    spec = spec_of("conv_lm", width=128)
    model, infos = models.create(spec, spec.hparams, VOCAB)
    roles = {n: i.role for n, i in infos.items()}
    assert roles["embed.weight"] == "embedding"
    assert roles["blocks.0.conv.weight"] == "hidden" and infos["blocks.0.conv.weight"].fan_in_mult == 4
    assert roles["blocks.0.proj.weight"] == "hidden"
    assert roles["blocks.0.conv.bias"] == "vector" and roles["blocks.0.norm.weight"] == "vector"
    assert roles["unembed.weight"] == "readout" and roles["unembed.bias"] == "scalar"
    assert model._mutune_readouts == ("unembed",) and model._mutune_inputs == ("embed",)
    groups = optim.param_groups(model, infos, spec.hparams, "mup", "adamw")
    lr = {n: g["lr"] / spec.hparams.lr for g in groups for n in g["names"]}
    assert lr["blocks.0.conv.weight"] == pytest.approx(1 / 4) and lr["unembed.weight"] == 1.0
    # hidden init σ·√(base/fan_in), fan_in = channels × kernel
    std = model.blocks[0].conv.weight.std().item()
    assert std == pytest.approx(spec.hparams.init_std * (32 / (128 * 3)) ** 0.5, rel=0.05)


def test_multipliers_are_hooked_on_the_named_modules():
    """α_in scales the embedding output, α_out/m the readout's input (its bias is not divided by m)."""
    outs = {}
    x = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    for alpha_in, alpha_out in ((1.0, 1.0), (1.0, 3.0), (2.0, 1.0)):
        spec = spec_of(
            "conv_lm", [f"hparams.alpha_in={alpha_in}", f"hparams.alpha_out={alpha_out}"], width=64
        )
        model, _ = models.create(spec, spec.hparams, VOCAB)
        with torch.no_grad():
            model.unembed.bias.fill_(0.5)
        emb: list[torch.Tensor] = []
        h = model.embed.register_forward_hook(lambda m, a, o, emb=emb: emb.append(o))
        logits, _ = model(x)
        h.remove()
        outs[(alpha_in, alpha_out)] = (logits, emb[0])
    base_logits, base_emb = outs[(1.0, 1.0)]
    # width 64 = 2 × base: the readout sees α_out/m = 1/2 of its input at α_out = 1
    torch.testing.assert_close(outs[(1.0, 3.0)][0] - 0.5, 3 * (base_logits - 0.5))
    torch.testing.assert_close(outs[(2.0, 1.0)][1], 2 * base_emb)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_factory_mup_equals_sp_at_the_base_width(optimizer):
    losses = {}
    for p in ("mup", "sp"):
        spec = spec_of(
            "conv_lm",
            [f"train.optimizer={optimizer}", "hparams.alpha_out=2", "hparams.weight_decay=0.1"],
            parametrization=p,
        )
        losses[p] = [c["val_loss"] for c in train(spec, spec.hparams).curve]
    assert losses["mup"] == losses["sp"]


def test_factory_flops_are_measured_and_match_the_gpt_formula(monkeypatch):
    """FlopCounterMode on the meta device gives the example transformer the same FLOPs per token as
    the built-in GPT's 6N + 12·L·T·d accounting (same matmuls, same attention)."""
    monkeypatch.chdir(CONFIGS.parent)
    spec = config.load_spec(CONFIGS / "factory.yaml")
    gpt = config.load_spec(CONFIGS / "quickstart.yaml")
    for width in (64, 512):
        ours, theirs = flops.cost(spec, width), flops.cost(gpt, width)
        assert ours.flops_per_token == theirs.flops_per_token
        assert ours.tokens_per_step == theirs.tokens_per_step and ours.params == theirs.params
        assert ours.memory_bytes > ours.params * 16


@pytest.mark.parametrize("linear_first", [False, True])
def test_tied_weights_are_embeddings_whatever_the_attribute_order(linear_first):
    """A weight shared by an Embedding and a Linear readout gets the embedding's constant init and
    LR, and α_out/m on the Linear, whichever module registered it first."""
    stds = []
    for width in (32, 128, 512):
        spec = spec_of("tied_lm", width=width, factory_kwargs={"linear_first": linear_first})
        model, infos = models.create(spec, spec.hparams, VOCAB)
        name = "head.weight" if linear_first else "emb.weight"
        assert infos[name].role == "embedding" and infos[name].tied_readout
        assert model._mutune_readouts == ("head",)
        stds.append(model.emb.weight.std().item())
    assert stds == pytest.approx([spec.hparams.init_std] * 3, rel=0.05)


@pytest.mark.parametrize(
    "fn, model, key, words",
    [
        ("nowhere", {"factory": "tests.no_such_module:f"}, "model.factory", "cannot import"),
        ("nowhere", {"factory": "tests.factory_models:conv_lmm"}, "model.factory", "did you mean 'conv_lm'"),
        ("nowhere", {"factory": "os.path:sep"}, "model.factory", "not callable"),
        ("not_a_module", {}, "model.factory", "expected an nn.Module"),
        ("conv_lm", {"factory_kwargs": {"depht": 2}}, "model.factory_kwargs", "rejected its arguments"),
        ("ignores_width", {}, "model", "ignores its width"),
        ("cube", {}, "model", "3 dims that grow"),
        ("embedding_readout_lm", {}, "model.readout", "no readout found"),
        ("custom_head_lm", {}, "model.readout", "held by Head 'out'"),
        ("conv_lm", {"readout": ["head"]}, "model.readout[0]", "no module named 'head'"),
        ("conv_lm", {"readout": ["blocks.0"]}, "model.readout", "not among the named readouts"),
        ("embedding_readout_lm", {"readout": ["emb"]}, "model.readout", "only nn.Embedding modules hold it"),
        ("tied_lm", {"zero_init_readout": True}, "model.zero_init_readout", "tied"),
    ],
)
def test_models_mutune_cannot_make_mup_are_refused(fn, model, key, words):
    d = factory_spec(fn, **model)
    if "factory" in model:
        d["model"]["factory"] = model["factory"]
    spec = config.spec_from_dict(d)
    with pytest.raises(SpecError) as e:
        models.validate(spec, spec.hparams, VOCAB)
    assert e.value.key == key and words in e.value.message, e.value


def test_forward_must_return_logits():
    spec = spec_of("hidden_states_lm")
    model, _ = models.create(spec, spec.hparams, VOCAB)
    with pytest.raises(SpecError, match="expected logits") as e:
        model(torch.randint(0, VOCAB, (2, 8)))
    assert e.value.key == "model.factory"


@pytest.mark.parametrize(
    "model, key",
    [
        ({"family": "factory"}, "model.factory"),
        ({"family": "factory", "factory": "import os; os.system('x')"}, "model.factory"),
        (
            {"family": "factory", "factory": "a.b:c", "factory_kwargs": {"width": 3}},
            "model.factory_kwargs.width",
        ),
        ({"family": "factory", "factory": "a.b:c", "tie_embeddings": True}, "model.tie_embeddings"),
        ({"family": "factory", "factory": "a.b:c", "readout": [""]}, "model.readout[0]"),
        ({"family": "gpt", "readout": ["lm_head"]}, "model.readout"),
        ({"family": "gpt", "factory": "a.b:c"}, "model.factory"),
    ],
)
def test_factory_keys_are_validated_in_the_spec(model, key):
    with pytest.raises(SpecError) as e:
        config.spec_from_dict({"model": model})
    assert e.value.key == key


def test_searched_alpha_attn_the_factory_never_sees_is_refused(run_cli, workdir):
    d = factory_spec("conv_lm")
    d["search"]["space"]["alpha_attn"] = {"type": "log_uniform", "low": 0.5, "high": 2.0}
    r = run_cli("search", write_spec(workdir / "s.yaml", d), "--no-transfer")
    assert r.code == 2 and "search.space.alpha_attn" in r.err, r
    assert not (workdir / "runs").exists()


def test_vocab_and_seq_len_are_passed_when_named():
    spec = spec_of("sqrt_attention_lm", seq_len=24)
    model, _ = models.create(spec, spec.hparams, data.vocab_size(spec.data))
    assert model.pos.weight.shape == (24, 32) and model.tok.weight.shape == (VOCAB, 32)


# ---------------------------------------------------------------------------------------------
# A parameter is a readout because of what it does (issue: (1, 1, E) biases and raw tables)


def test_multihead_attention_bias_kv_are_vectors():
    """(1, 1, E): one width dim and nothing else above 1, a vector: σ init at every width, no decay."""
    stds = {}
    for width in (64, 256):
        spec = spec_of("mha_lm", ["hparams.weight_decay=0.1"], width=width)
        model, infos = models.create(spec, spec.hparams, VOCAB)
        assert infos["attn.bias_k"].role == infos["attn.bias_v"].role == "vector"
        assert infos["attn.in_proj_weight"].role == "hidden" and infos["attn.in_proj_weight"].fan_in == width
        groups = optim.param_groups(model, infos, spec.hparams, "mup", "adamw")
        wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
        assert wd["attn.bias_k"] == 0 and wd["attn.in_proj_weight"] > 0
        stds[width] = model.attn.bias_k.std().item()
    assert stds[64] == pytest.approx(0.05, rel=0.25) and stds[256] == pytest.approx(0.05, rel=0.15)


def test_a_raw_position_table_is_a_table_not_a_readout():
    """A (seq_len, width) nn.Parameter of the model itself: an embedding-like table (σ, η), accepted;
    the (vocab, width) Linear is the readout."""
    spec = spec_of("bmm_fixed_head_dim", width=128)
    models.validate(spec, spec.hparams, VOCAB)
    model, infos = models.create(spec, spec.hparams, VOCAB)
    assert infos["pos"].role == "embedding" and infos["pos"].owners == ("",)
    assert model.pos.std().item() == pytest.approx(0.05, rel=0.05)
    assert model._mutune_readouts == ("head",)


def test_parametrize_tells_a_raw_table_from_a_readout_by_its_use_or_the_output_size():
    """A raw (seq_len, width) position table is not a readout: its use says so (rows sliced and added:
    a table), and where no forward is watched, the output size of the Linear readout (out_features,
    given or found) does. It used to be taken for a readout and refused without out_features."""
    from . import factory_models as fm

    def build(w):
        return fm.bmm_fixed_head_dim(w, VOCAB, 16)

    groups = mutune.parametrize(build(64), base_width=32, factory=build, lr=0.01)
    assert {n: g["lr"] for g in groups for n in g["names"]}["pos"] == 0.01
    watched = mutune.parametrize.classify(
        build, 64, 32, forward=lambda m: m(torch.zeros(1, 16, dtype=torch.long, device="meta"))
    )
    assert watched["pos"].role == "embedding" and watched["pos"].source.startswith("use: indexed as a table")
    for out_features in (VOCAB, None):  # no forward: the shape, against the output size given or found
        infos = mutune.parametrize.classify(build, 64, 32, out_features=out_features)
        assert infos["pos"].role == "embedding" and infos["head.weight"].role == "readout"
        assert infos["pos"].source.startswith(f"shape (its finite side is not the output size {VOCAB})")


def test_conv1d_weights_stored_in_out_get_the_init_of_a_linear():
    """GPT-2's Conv1D keeps (in, out) weights: the same fans, role and init as an nn.Linear twin."""
    conv = spec_of("conv1d_lm", width=128)
    twin = spec_of("conv1d_lm", width=128, factory_kwargs={"linear": True})
    ci = models.classify(conv, conv.hparams, VOCAB)
    ti = models.classify(twin, twin.hparams, VOCAB)
    for name in ("c_fc.weight", "c_proj.weight"):
        a, b = ci[name], ti[name]
        assert a.shape == b.shape[::-1] and a.role == b.role == "hidden"
        assert (a.fan_in, a.base_fan_in, a.fan_in_mult, a.fan_out_mult) == (
            b.fan_in,
            b.base_fan_in,
            b.fan_in_mult,
            b.fan_out_mult,
        )
        assert pz.get("mup").init(a, 0.05, 32) == pz.get("mup").init(b, 0.05, 32)
    model, _ = models.create(conv, conv.hparams, VOCAB)
    assert model.c_proj.weight.std().item() == pytest.approx(
        0.05 * (32 / 512) ** 0.5, rel=0.05
    )  # fan_in 4·128
