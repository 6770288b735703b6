"""Agreement with the reference implementation, Microsoft's ``mup`` (PyPI 1.0.0, installed with
``pip install --no-deps mup``; this module is skipped, saying so, when it is not importable).

For the built-in GPT (untied readout, width grown through head_dim so that the 1/d attention rule
matters; and tied readout) and the MLP, we build a *twin* the mup way: the same architecture with
the readout swapped for ``mup.MuReadout`` / ``mup.MuSharedReadout`` (which apply α_out / width_mult),
the attention scale written as mup's README does (α·√d_base / d), ``mup.set_base_shapes`` from a
base and a delta model, and ``mup.MuAdamW`` / ``mup.MuSGD``. Both start from identical weights and
train 20 steps on the same batches at widths base, 4× and 16×, in float64 so that what is compared
is the rules, not rounding. The loss trajectories must agree to 1e-5 relative.

mutune differs from mup on purpose in two places, and the twin is adjusted to mutune's documented
rule there (each adjustment is checked to matter, so the agreement is not vacuous):

1. Adam ε is ε / m on every parameter with a width dim (ε / m_in on hidden weights), TP5 App. B.3
   (PyTorch adds ε after the square root, so it must scale like the gradient, ∝ 1/m for all of them
   under µP). mup leaves ε unscaled.
2. Weight decay applies to ≥2-D weights only; mup decays every parameter, biases and norm gains too.
   (mup's MuAdamW multiplies hidden weight decay by width_mult, as mutune does: pip mup 1.0.0 has no
   ``decoupled_wd``.)

Initialisation is compared separately (the dynamics test copies the weights): mutune's init std of
every parameter equals what ``mup.init.normal_`` (hidden) and ``MuReadout``'s rescaling (readout)
give. One place where mutune deliberately does *not* follow mup: a tied embedding/readout keeps the
embedding's constant std, where ``MuSharedReadout`` multiplies it by √width_mult (mup issue #55).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mutune import config, data, models
from mutune.models.gpt import GPT, GPTConfig
from mutune.models.mlp import MLP, MLPConfig
from mutune.mup import optim
from mutune.mup import parametrizations as pz

mup = pytest.importorskip(
    "mup", reason="the reference package `mup` is not installed (pip install --no-deps mup); skipping"
)

BASE = 16
WIDTHS = (BASE, 4 * BASE, 16 * BASE)
STEPS = 20
VOCAB = 256  # bytes
BATCH = 4
HP = {
    "init_std": 0.08,
    "alpha_in": 1.5,
    "alpha_out": 2.0,
    "alpha_attn": 1.3,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "momentum": 0.9,
}
LR = {"adamw": 0.01, "sgd": 0.1}
EPS = 1e-5  # large enough that the ε rule shows in the losses (the default 1e-8 would not)
MODELS = {
    # width grows through head_dim (2 heads): the 1/d attention rule is exercised
    "gpt": {"family": "gpt", "depth": 2, "n_head": 2, "head_dim": None, "seq_len": 8, "bias": True},
    # width grows through heads; tied embedding / readout
    "gpt-tied": {"family": "gpt", "depth": 2, "head_dim": 8, "seq_len": 8, "tie_embeddings": True},
    "mlp": {"family": "mlp", "depth": 3, "seq_len": 4, "bias": True},
}


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def make_spec(name: str, width: int, optimizer: str) -> config.Spec:
    return config.spec_from_dict(
        {
            "model": {**MODELS[name], "width": width, "base_width": BASE},
            "train": {"optimizer": optimizer, "eps": EPS},
            "hparams": {**HP, "lr": LR[optimizer]},
        }
    )


def batches(spec: config.Spec, n: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed batches of the built-in corpus (bytes of the Python standard library)."""
    corpus = data.load(spec.data, min_len=spec.model.seq_len + 1)
    rng = np.random.default_rng(123)
    B = BATCH if spec.model.family == "gpt" else 8 * BATCH  # the MLP predicts one token per sequence
    return [data.get_batch(corpus.train, B, spec.model.seq_len, rng, torch.device("cpu")) for _ in range(n)]


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss in float64 from the logits (the models' own loss casts to float32)."""
    logits, _ = model(x)
    if logits.ndim == 3:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    return F.cross_entropy(logits, y[:, -1])


def trajectory(model, opt, data) -> list[float]:
    losses = []
    for x, y in data:
        loss = loss_of(model, x, y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses


# ---------------------------------------------------------------------------------------------
# The twin, built the mup way (only the architecture classes are shared with mutune)


def twin_module(spec: config.Spec, width: int) -> torch.nn.Module:
    m, hp = spec.model, spec.hparams
    if m.family == "gpt":
        n_head = width // m.head_dim if m.head_dim else m.n_head
        head_dim, base_head_dim = width // n_head, (m.head_dim or m.base_width // m.n_head)
        net = GPT(
            GPTConfig(
                vocab_size=VOCAB,
                seq_len=m.seq_len,
                width=width,
                depth=m.depth,
                n_head=n_head,
                bias=m.bias,
                input_mult=hp.alpha_in,
                output_mult=1.0,  # MuReadout applies α_out / width_mult
                attn_scale=hp.alpha_attn * math.sqrt(base_head_dim) / head_dim,  # mup README: 8/d at d=64
            )
        )
        if m.tie_embeddings:
            net.lm_head = mup.MuSharedReadout(net.wte.weight, bias=False, output_mult=hp.alpha_out)
        else:
            net.lm_head = mup.MuReadout(width, VOCAB, bias=False, output_mult=hp.alpha_out)
        return net
    net = MLP(
        MLPConfig(
            vocab_size=VOCAB,
            seq_len=m.seq_len,
            width=width,
            depth=m.depth,
            bias=m.bias,
            input_mult=hp.alpha_in,
        )
    )
    net.readout = mup.MuReadout(width, VOCAB, bias=m.bias, output_mult=hp.alpha_out)
    return net


def twin(spec: config.Spec) -> torch.nn.Module:
    net = twin_module(spec, spec.model.width)
    with torch.device("meta"):
        base, delta = twin_module(spec, BASE), twin_module(spec, 2 * BASE)
    mup.set_base_shapes(net, base, delta=delta)
    return net


def twin_optimizer(
    net, spec: config.Spec, match_eps: bool = True, match_wd: bool = True
) -> torch.optim.Optimizer:
    hp, t = spec.hparams, spec.train
    params = list(net.parameters())
    # one group per parameter (Adam is elementwise, so the grouping changes nothing) so that each can
    # take its own ε below
    if match_wd:  # deviation 2: mutune does not decay 1-D parameters (biases, norm gains)
        groups = [{"params": [p]} if p.ndim >= 2 else {"params": [p], "weight_decay": 0.0} for p in params]
    else:
        groups = [{"params": [p]} for p in params]
    if t.optimizer == "sgd":
        return mup.MuSGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    opt = mup.MuAdamW(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=t.eps, weight_decay=hp.weight_decay)
    if match_eps:  # deviation 1: Adam ε / m on every parameter with a width dim (TP5 App. B.3)
        for g in opt.param_groups:
            if g["params"] and g["params"][0].infshape.ninf() >= 1:
                g["eps"] = t.eps / g["params"][0].infshape.width_mult()
    return opt


def mutune_model(spec: config.Spec):
    model, infos = models.create(spec, spec.hparams, VOCAB, seed=0)
    groups = models.param_groups(spec, model, infos, spec.hparams)
    return model, infos, optim.make_optimizer(groups, spec.hparams, spec.train.optimizer)


def rel_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("name", list(MODELS))
def test_loss_trajectories_agree_with_mup(name, optimizer):
    for width in WIDTHS:
        spec = make_spec(name, width, optimizer)
        data = batches(spec)
        model, _, opt = mutune_model(spec)
        net = twin(spec)
        net.load_state_dict(model.state_dict())
        ours, theirs = trajectory(model, opt, data), trajectory(net, twin_optimizer(net, spec), data)
        assert all(math.isfinite(v) for v in ours)
        assert ours[-1] < ours[0] - 0.05, f"width {width}: the run must learn for the comparison to mean much"
        assert rel_diff(ours, theirs) <= 1e-5, f"{name} {optimizer} width {width}: {ours} vs {theirs}"


@pytest.mark.parametrize("name", ["gpt", "mlp"])
def test_the_deliberate_deviations_matter(name):
    """Undoing either adjustment of the twin (ε rule, 1-D weight decay) makes it measurably differ,
    and so does a plain AdamW (SP learning rates): the agreement above is a real constraint."""
    spec = make_spec(name, WIDTHS[-1], "adamw")
    data = batches(spec)
    model, _, opt = mutune_model(spec)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ours = trajectory(model, opt, data)
    for kw in ({"match_eps": False}, {"match_wd": False}):
        net = twin(spec)
        net.load_state_dict(state)
        assert rel_diff(ours, trajectory(net, twin_optimizer(net, spec, **kw), data)) > 1e-4, kw
    plain = twin(spec)
    plain.load_state_dict(state)
    sp_opt = torch.optim.AdamW(plain.parameters(), lr=spec.hparams.lr, eps=EPS, weight_decay=0.1)
    assert rel_diff(ours, trajectory(plain, sp_opt, data)) > 1e-3


def test_sgd_agrees_below_the_base_width():
    """A proxy narrower than its base (m = 1/2): vector-like SGD LRs are η·m, as in mup. mutune used
    max(fan_in_mult, fan_out_mult), which is 1 there, until this test found it."""
    spec = make_spec("mlp", BASE // 2, "sgd")
    data = batches(spec)
    model, infos, opt = mutune_model(spec)
    net = twin(spec)
    net.load_state_dict(model.state_dict())
    assert rel_diff(trajectory(model, opt, data), trajectory(net, twin_optimizer(net, spec), data)) <= 1e-5
    assert infos["fc_in.weight"].width_mult == 0.5


# ---------------------------------------------------------------------------------------------
# Rules that the copied weights bypass: ε, init


@pytest.mark.parametrize("name", list(MODELS))
def test_adam_eps_rule_is_the_documented_one(name):
    spec = make_spec(name, WIDTHS[-1], "adamw")
    model, infos, opt = mutune_model(spec)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            info = infos[names[id(p)]]
            expected = EPS / info.fan_in_mult if info.role == "hidden" else EPS / info.width_mult
            assert g["eps"] == pytest.approx(expected), names[id(p)]
            assert info.role == "scalar" or g["eps"] < EPS  # every width-dim parameter's ε shrinks


@pytest.mark.parametrize("name", list(MODELS))
def test_init_stds_are_mups(name):
    """mutune's init std of each weight equals mup's: ``mup.init.normal_`` with the base-width std
    for hidden and input weights (it scales by width_mult^-1/2 when both dims are infinite), and
    SP's std times √width_mult for the readout (``MuReadout._rescale_parameters``)."""
    spec = make_spec(name, WIDTHS[-1], "adamw")
    sp = config.spec_from_dict(spec.to_dict(), ["model.parametrization=sp"])
    hp = spec.hparams
    infos = models.classify(spec, hp, VOCAB)
    base_infos = models.classify(spec, hp, VOCAB, width=BASE)
    net = twin(spec)
    params = dict(net.named_parameters())
    checked = 0
    for n, info in infos.items():
        r = pz.get("mup").rule(info, "adam", hp.init_std, BASE)
        if r.init != "normal":
            continue
        p = params[n]
        if info.role == "readout":
            sp_std = pz.get("sp").rule(models.classify(sp, hp, VOCAB)[n], "adam", hp.init_std, BASE).std
            assert r.std == pytest.approx(sp_std * math.sqrt(p.infshape.width_mult())), n
        else:
            base_std = pz.get("mup").rule(base_infos[n], "adam", hp.init_std, BASE).std
            torch.manual_seed(0)
            mup.init.normal_(p, std=base_std)
            theirs = p.detach().clone()
            torch.manual_seed(0)
            ours = torch.empty_like(theirs).normal_(std=r.std)
            torch.testing.assert_close(ours, theirs, msg=n)
        checked += 1
    assert checked >= 3


def test_tied_init_stays_constant_where_mup_grows_it():
    """mup's MuSharedReadout rescales the shared weight by √width_mult (mup issue #55): the tied
    embedding's init std grows with width. mutune keeps the embedding's σ at every width."""
    ours, theirs = [], []
    for width in WIDTHS:
        spec = make_spec("gpt-tied", width, "adamw")
        model, infos, _ = mutune_model(spec)
        assert infos["wte.weight"].tied_readout
        ours.append(model.wte.weight.std().item())
        torch.manual_seed(0)
        net = twin_module(spec, width)
        torch.nn.init.normal_(net.wte.weight, std=HP["init_std"])
        with torch.device("meta"):
            base, delta = twin_module(spec, BASE), twin_module(spec, 2 * BASE)
        mup.set_base_shapes(net, base, delta=delta)  # rescale_params=True, as by default
        theirs.append(net.wte.weight.std().item())
    for std in ours:
        assert std == pytest.approx(HP["init_std"], rel=0.1)
    assert theirs[-1] / theirs[0] == pytest.approx(4.0, rel=0.1)  # √16
