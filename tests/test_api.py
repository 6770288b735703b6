"""The Python API: `import mutune` and the parametrization for a user's own training loop."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import mutune
from mutune import config, models
from mutune.config import SpecError
from mutune.mup import optim

from .conftest import ROOT, TINY, write_spec

EXAMPLE = ROOT / "examples" / "own_loop.py"


def test_public_names():
    assert mutune.load_spec is config.load_spec
    for name in ("search", "transfer", "report", "sweep", "parametrize"):
        module = getattr(mutune, name)
        assert callable(module) and module.__name__ == f"mutune.{name}"
        assert callable(getattr(module, name))  # the module is its main function too
    from mutune import search as search_mod  # the submodule import still gives the module

    assert search_mod.default_run_dir is mutune.search.default_run_dir
    from mutune import checks

    assert mutune.coord_check is checks.coord_check
    with pytest.raises(AttributeError):
        mutune.no_such_name  # noqa: B018


def test_search_transfer_report_from_python(workdir):
    spec = mutune.load_spec(write_spec(workdir / "t.yaml", TINY), ["search.n_trials=2"])
    res = mutune.search(spec, transfer=False)
    best = yaml.safe_load((res.run_dir / "best.yaml").read_text())
    assert res.best.to_dict() == best and res.n_finished == 2
    plan = mutune.transfer(res.run_dir, ["width=64"], dry_run=True).plan
    assert vars(plan.hparams) == best["hparams"] and plan.spec.model.width == 64
    rep = mutune.report(res.run_dir)
    assert rep.best.to_dict() == best and rep.counts()["complete"] == 2


# ---------------------------------------------------------------------------------------------
# mutune.parametrize


class Net(nn.Module):
    def __init__(self, width: int, d_in: int = 12, d_out: int = 5):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        return self.out(F.relu(self.hidden(F.relu(self.inp(x)))))


def _lrs(groups) -> dict[str, float]:
    return {n: g["lr"] for g in groups for n in g["names"]}


def test_parametrize_groups_init_and_readout_multiplier():
    torch.manual_seed(0)
    model = Net(256)
    groups = mutune.parametrize(model, base_width=64, factory=Net, lr=0.01, init_std=0.2, seed=1)
    lrs = _lrs(groups)
    # AdamW under µP: hidden matrices get η/m (m = 256/64 = 4); input, readout, biases keep η
    assert lrs["hidden.weight"] == pytest.approx(0.01 / 4)
    assert lrs["inp.weight"] == lrs["out.weight"] == lrs["hidden.bias"] == pytest.approx(0.01)
    assert all("eps" in g and g["weight_decay"] == 0 for g in groups)
    # init: hidden σ·√(base/fan_in), input σ·√(base/d_in), readout at its base-width scale σ
    assert model.hidden.weight.std().item() == pytest.approx(0.2 * math.sqrt(64 / 256), rel=0.03)
    assert model.inp.weight.std().item() == pytest.approx(0.2 * math.sqrt(64 / 12), rel=0.05)
    assert model.out.weight.std().item() == pytest.approx(0.2, rel=0.1)
    assert model.hidden.bias.abs().max().item() == 0
    # the readout's input is multiplied by α_out / m (its bias keeps its size), once however often
    # parametrize is called
    h = torch.randn(3, 256)
    with torch.no_grad():
        model.out.bias.fill_(1.0)
    w, b = model.out.weight, model.out.bias
    torch.testing.assert_close(model.out(h), F.linear(h / 4, w, b))
    mutune.parametrize(model, base_width=64, factory=Net, alpha_out=2.0)
    torch.testing.assert_close(model.out(h), F.linear(h * 2 / 4, w, b))
    mutune.parametrize(model, base_width=64, factory=Net, parametrization="sp")
    torch.testing.assert_close(model.out(h), F.linear(h, w, b))  # SP: no multiplier
    # the optimizer takes the groups as they are
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    loss = model(torch.randn(8, 12)).square().mean()
    loss.backward()
    opt.step()


def test_parametrize_equals_the_builtin_rules():
    """On mutune's own MLP, the API gives exactly the groups the trainer uses."""
    spec = config.spec_from_dict(
        {**TINY, "model": {"family": "mlp", "width": 128, "base_width": 32, "depth": 3, "seq_len": 4}}
    )
    hp = config.HParams(lr=0.003, weight_decay=0.1)
    model = models.build(spec, hp, 256)
    infos = models.classify(spec, hp, 256)
    internal = optim.param_groups(model, infos, hp, "mup", "adamw", eps=1e-8)

    def factory(w):
        return models.build(spec, hp, 256, w)

    for optimizer in ("adamw", "sgd"):
        ours = mutune.parametrize(
            model,
            base_width=32,
            factory=factory,
            lr=0.003,
            weight_decay=0.1,
            optimizer=optimizer,
            readout=models.readout_names(spec),
            scale_readout=False,  # the built-in MLP applies α_out/m in its forward already
        )
        if optimizer == "adamw":
            assert _lrs(ours) == _lrs(internal)
            wd = {n: g["weight_decay"] for g in internal for n in g["names"]}
            assert {n: g["weight_decay"] for g in ours for n in g["names"]} == wd
        else:  # SGD: vector-like params get η·m (m = 4), hidden matrices η·m_out/m_in = η
            lrs = _lrs(ours)
            assert lrs["readout.weight"] == pytest.approx(0.003 * 4) and lrs["hidden.0.weight"] == 0.003
    # the same classification from two given models instead of a factory
    with torch.device("meta"):
        base, delta = factory(32), factory(96)
    pair = mutune.parametrize(
        model,
        base_width=32,
        base_model=base,
        delta_model=delta,
        lr=0.003,
        weight_decay=0.1,
        scale_readout=False,
    )
    assert _lrs(pair) == _lrs(internal)


def test_parametrize_errors_say_what_to_give():
    model = Net(128)
    with pytest.raises(SpecError, match="factory=") as e:
        mutune.parametrize(model, base_width=64)
    assert e.value.key == "factory"
    with pytest.raises(SpecError, match="use its width"):
        mutune.parametrize(model, base_width=64, factory=lambda w: Net(128))
    with pytest.raises(SpecError) as e:
        mutune.parametrize(model, base_width=64, factory=Net, width=256)
    assert e.value.key == "width"
    with pytest.raises(SpecError) as e:
        mutune.parametrize(model, base_width=64, factory=Net, optimizer="lion")
    assert e.value.key == "optimizer"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}  # small matmuls: 1 thread is fastest


def test_own_loop_example_runs():
    p = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "20", "--widths", "32,64", "--lrs", "0.004,0.016"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["32", "64"]
    assert all(math.isfinite(float(v)) for r in rows for v in r[1:])


@pytest.fixture
def one_thread():
    """Tiny matmuls: one thread is as fast, and far faster on a machine shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_own_loop_example_shows_the_lr_staying_put_under_mup_only(one_thread):
    """What the example's docstring claims: µP keeps the best LR as the width grows, SP does not."""
    spec = importlib.util.spec_from_file_location("own_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    lrs = (0.001, 0.004, 0.016)

    def losses(width, parametrization):
        return [example.train(width, lr, 150, parametrization=parametrization) for lr in lrs]

    base = losses(64, "mup")
    assert example.train(64, lrs[0], 150, parametrization="sp") == base[0]  # µP is SP at the base width
    best = {p: lrs[min(range(3), key=losses(512, p).__getitem__)] for p in ("mup", "sp")}
    assert lrs[min(range(3), key=base.__getitem__)] == best["mup"] == 0.004
    assert best["sp"] < 0.004


# ---------------------------------------------------------------------------------------------
# Raw parameters classified by their use (issue 21)


class RawPosGPT(nn.Module):
    """nanoGPT's layout with a raw (block, width) position parameter and a tied, biased head."""

    def __init__(self, width: int, vocab: int = 64, block: int = 16):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Parameter(torch.zeros(block, width))
        self.h = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in range(2))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=True)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe[: idx.shape[1]]
        for block in self.h:
            x = x + block(x)
        return self.lm_head(self.ln_f(x))


@pytest.mark.parametrize("alpha_out", [1.0, 2.0])
def test_raw_position_and_tied_biased_head_give_scaled_logits_plus_bias(alpha_out):
    """No readout= argument: the raw (T, d) position parameter is a table (indexed, added), not a
    readout, and the logits are (h Wᵀ)·α_out/m + b, the bias not divided by m."""
    torch.manual_seed(0)
    model = RawPosGPT(128)
    mutune.parametrize(
        model, base_width=32, factory=lambda w: RawPosGPT(w), init_std=0.02, alpha_out=alpha_out
    )
    infos = mutune.parametrize.classify(
        lambda w: RawPosGPT(w),
        128,
        32,
        forward=lambda m: m(torch.zeros(1, 4, dtype=torch.long, device="meta")),
    )
    assert infos["wpe"].role == "embedding" and infos["wpe"].source.startswith("use: indexed as a table")
    assert infos["wte.weight"].tied_readout and infos["lm_head.bias"].role == "scalar"
    with torch.no_grad():
        model.lm_head.bias.normal_()  # a bias of size 1: dividing it by m would show
    seen = {}
    handle = model.ln_f.register_forward_hook(lambda mod, args, out: seen.setdefault("h", out))
    idx = torch.randint(0, 64, (2, 8))
    logits = model(idx)
    handle.remove()
    W, b, h = model.lm_head.weight, model.lm_head.bias, seen["h"]
    expected = (h @ W.T) * (alpha_out / 4) + b
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, (h @ W.T + b) * (alpha_out / 4))  # the bias is not scaled


def test_roles_override_and_raw_tables_without_a_forward():
    """roles= overrides any parameter (source user); with no forward to watch, a raw table's shape and
    the Linear readouts' output size (64) still tell it from a readout."""
    infos = mutune.parametrize.classify(lambda w: RawPosGPT(w), 128, 32)
    assert infos["wpe"].role == "embedding" and infos["wpe"].source.startswith(
        "shape (its finite side is not"
    )
    infos = mutune.parametrize.classify(
        lambda w: RawPosGPT(w), 128, 32, roles={"wpe": "vector", "h.0.1.weight": "hidden"}
    )
    assert infos["wpe"].role == "vector" and infos["wpe"].source == "user (roles)"
    assert infos["h.0.1.weight"].fan_in == 128 and infos["h.0.1.weight"].source == "user (roles)"
    with pytest.raises(SpecError, match="roles.wpx") as e:
        mutune.parametrize.classify(lambda w: RawPosGPT(w), 128, 32, roles={"wpx": "vector"})
    assert "did you mean 'wpe'" in str(e.value)
    with pytest.raises(SpecError, match="roles.wpe"):
        mutune.parametrize.classify(lambda w: RawPosGPT(w), 128, 32, roles={"wpe": "bias"})
