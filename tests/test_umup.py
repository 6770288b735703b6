"""u-µP, a third parametrization (issue 24): its rules and its forward agree with Graphcore's
``unit_scaling`` (the reference implementation, as ``mup`` is µP's), its coord check passes it and
fails deliberate violations, and the commands run on it.

The reference model is built from unit_scaling's own modules and functions, mirroring mutune's GPT
(token and position tables summed unit-scaled, pre-norm blocks with LayerNorm gains, attention, a GELU
MLP, a final norm, the readout), its weights copied from mutune's, in float64.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from mutune import checks, config, data, models
from mutune.mup import optim, unit
from mutune.mup import parametrizations as pz

from .conftest import CONFIGS
from .violations import registered

uu = pytest.importorskip("unit_scaling", reason="unit-scaling (the u-µP reference) is not installed")
U = pytest.importorskip("unit_scaling.functional")
rule = pytest.importorskip("unit_scaling.core.functional").transformer_residual_scaling_rule

HP = {"lr": 0.7, "weight_decay": 0.1, "alpha_out": 1.7, "alpha_attn": 2.3, "alpha_res": 1.6}
HP |= {"alpha_res_attn_ratio": 0.6, "alpha_ffn_act": 1.4}
T = 16


def spec_at(width: int, **over) -> config.Spec:
    d = {
        "model": {
            "width": width,
            "base_width": 64,
            "depth": 3,
            "head_dim": 32,
            "seq_len": T,
            "parametrization": "umup",
        },
        "hparams": HP,
        "train": {"batch_size": 4},
    }
    return config.spec_from_dict(d, [f"{k}={v}" for k, v in over.items()])


class Reference(torch.nn.Module):
    """mutune's GPT, written with unit_scaling's modules and functions."""

    def __init__(self, vocab: int, width: int, depth: int, heads: int, h: dict):
        super().__init__()
        self.wte, self.wpe = uu.Embedding(vocab, width), uu.Embedding(T, width)
        tau = rule(h["alpha_res"], h["alpha_res_attn_ratio"])
        self.taus = [(tau(2 * i, 2 * depth), tau(2 * i + 1, 2 * depth)) for i in range(depth)]
        self.h = uu.DepthModuleList(
            torch.nn.ModuleDict(
                {
                    "ln_1": uu.LayerNorm(width, elementwise_affine=True, bias=False),
                    "attn": uu.MHSA(width, heads, is_causal=True, mult=h["alpha_attn"]),
                    "ln_2": uu.LayerNorm(width, elementwise_affine=True, bias=False),
                    "c_fc": uu.Linear(width, 4 * width),
                    "act": uu.GELU(mult=h["alpha_ffn_act"]),
                    "c_proj": uu.Linear(4 * width, width),
                }
            )
            for _ in range(depth)
        )
        self.ln_f = uu.LayerNorm(width, elementwise_affine=True, bias=False)
        self.lm_head = uu.LinearReadout(width, vocab)
        self.mult = h["alpha_out"]

    def forward(self, idx, targets):
        outs = {}
        x = U.add(self.wte(idx), self.wpe(torch.arange(idx.shape[1])))
        outs["embedding"] = x
        for i, (b, (t_attn, t_mlp)) in enumerate(zip(self.h, self.taus, strict=True)):
            r, skip = U.residual_split(x, t_attn)
            a = b["attn"](b["ln_1"](r))
            outs[f"h.{i}.attn"] = a
            x = U.residual_add(a, skip, t_attn)
            r, skip = U.residual_split(x, t_mlp)
            m = b["c_proj"](b["act"](b["c_fc"](b["ln_2"](r))))
            outs[f"h.{i}.mlp"] = m
            x = U.residual_add(m, skip, t_mlp)
            outs[f"h.{i}"] = x
        logits = self.lm_head(self.ln_f(x))
        loss = U.cross_entropy(logits.flatten(end_dim=-2), targets.flatten(), mult=self.mult)
        outs["logits"] = logits * self.mult
        return outs, loss

    def mutune_names(self) -> dict[str, str]:
        """Reference parameter name -> mutune's."""
        out = {"wte.weight": "wte.weight", "wpe.weight": "wpe.weight", "ln_f.weight": "ln_f.weight"}
        out["lm_head.weight"] = "lm_head.weight"
        for i in range(len(self.h)):
            for ref, mine in (
                ("ln_1.weight", "ln_1.weight"),
                ("attn.linear_qkv.weight", "attn.c_attn.weight"),
                ("attn.linear_o.weight", "attn.c_proj.weight"),
                ("ln_2.weight", "ln_2.weight"),
                ("c_fc.weight", "mlp.c_fc.weight"),
                ("c_proj.weight", "mlp.c_proj.weight"),
            ):
                out[f"h.{i}.{ref}"] = f"h.{i}.{mine}"
        return out


def built(width: int):
    spec = spec_at(width)
    vocab = data.vocab_size(spec.data)
    model, infos = models.create(spec, spec.hparams, vocab, "cpu", seed=1)
    ref = Reference(vocab, width, spec.model.depth, width // 32, HP)
    mine = dict(model.named_parameters())
    with torch.no_grad():
        for r, m in ref.mutune_names().items():
            ref.get_parameter(r).copy_(mine[m])
    return spec, model.double(), infos, ref.double()


@pytest.mark.parametrize("width", [64, 128])
def test_every_sublayer_and_every_gradient_agree_with_unit_scaling(width):
    """float64, relative 1e-10: the same numbers, forward (each sub-layer) and backward (each
    parameter's gradient, which carries unit scaling's separate backward scales)."""
    spec, model, _, ref = built(width)
    idx = torch.randint(0, 256, (4, T), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 256, (4, T), generator=torch.Generator().manual_seed(1))
    mine: dict[str, torch.Tensor] = {}
    hooks = [model.wte.register_forward_hook(lambda m, a, o: None)]  # (kept for symmetry)
    for i, block in enumerate(model.h):
        hooks.append(
            block.attn.register_forward_hook(lambda m, a, o, i=i: mine.__setitem__(f"h.{i}.attn", o))
        )
        hooks.append(block.mlp.register_forward_hook(lambda m, a, o, i=i: mine.__setitem__(f"h.{i}.mlp", o)))
        hooks.append(block.register_forward_hook(lambda m, a, o, i=i: mine.__setitem__(f"h.{i}", o)))
    logits, loss = model(idx, targets)
    mine["logits"] = logits
    outs, ref_loss = ref(idx, targets)
    for h in hooks:
        h.remove()
    for k, v in mine.items():
        torch.testing.assert_close(v, outs[k], rtol=1e-10, atol=1e-12, msg=k)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    loss.backward()
    ref_loss.backward()
    params = dict(model.named_parameters())
    for r, m in ref.mutune_names().items():
        torch.testing.assert_close(params[m].grad, ref.get_parameter(r).grad, rtol=1e-10, atol=1e-14, msg=m)


@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_init_lr_and_weight_decay_agree_with_unit_scaling(width, optimizer):
    spec, model, infos, ref = built(width)
    kind = "adam" if optimizer == "adamw" else "sgd"
    lr_func = uu.optim.lr_scale_func_adam if optimizer == "adamw" else uu.optim.lr_scale_func_sgd(None)
    theirs = uu.optim.scaled_parameters(
        ref.parameters(), lr_func, lr=HP["lr"], weight_decay=HP["weight_decay"], independent_weight_decay=True
    )
    by_param = {id(g["params"][0]): g for g in theirs}
    groups = optim.param_groups(model, infos, spec.hparams, "umup", optimizer)
    mine = {n: g for g in groups for n in g["names"]}
    for r, m in ref.mutune_names().items():
        ref_group, info = by_param[id(ref.get_parameter(r))], infos[m]
        assert mine[m]["lr"] == pytest.approx(ref_group["lr"], rel=1e-12), m
        if info.is_matrix:  # mutune decays matrices only; unit_scaling decays what it is given
            assert mine[m]["weight_decay"] == pytest.approx(ref_group["weight_decay"], rel=1e-12), m
        else:
            assert mine[m]["weight_decay"] == 0.0, m
        init, std = pz.UMUP.init(info, spec.hparams.init_std, spec.model.base_width)
        assert (init, std) == (("ones", 0.0) if info.module_kind == "norm" else ("normal", 1.0)), m
        # and the weights drawn: unit variance, as unit_scaling's modules draw theirs
        if init == "normal" and info.shape[0] * info.shape[-1] >= 4096:
            assert model.get_parameter(m).std().item() == pytest.approx(1.0, abs=0.05), m
    assert uu.optim.lr_scale_func_adam  # (the reference's rule functions are the ones compared)
    assert {g["kind"] for g in groups} == {kind}


def test_the_ops_are_unit_scaled_at_init():
    """Each op alone: unit in, unit out (the property the ops are built for), both passes."""
    x = torch.randn(64, 256, dtype=torch.float64, requires_grad=True)
    w = torch.randn(512, 256, dtype=torch.float64, requires_grad=True)
    y = unit.linear(x, w, None)
    assert y.std().item() == pytest.approx(1.0, abs=0.05)
    y.backward(torch.randn_like(y))
    assert x.grad.std().item() == pytest.approx(math.sqrt(512 / 256), rel=0.1)  # "to_output_scale"
    assert unit.gelu(torch.randn(100_000, dtype=torch.float64)).std().item() == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------------------------------------
# The checks speak u-µP, and catch its violations


def test_the_coord_check_passes_umup_with_its_unit_scale_property(run_cli, workdir):
    r = run_cli(
        "coord-check", CONFIGS / "quickstart.yaml", "--smoke", "model.parametrization=umup", "--seeds", "2"
    )
    assert r.code == 0, r
    assert "unit scale at init" in r.out and "u-µP" in r.out
    # a pass never names a row past its limit: shares are of the deviation from the expected slope
    share = re.search(r"the closest, .*?: (\d+)% of its limit", r.out)
    assert share and int(share.group(1)) < 100, r.out
    assert "-0.5 ±0.3" in r.out  # u-µP's embedding updates shrink as expected: the limit says around what
    assert (workdir / "runs" / "quickstart-smoke" / "checks" / "coord_check_unit.csv").is_file()


def _no_fan_in_scale(monkeypatch):
    """A hidden linear without its 1/√fan_in forward scale (the weight's gradient scale kept)."""

    def forward(self, x):
        return unit.scale_bwd(torch.nn.functional.linear(x, self.weight, self.bias), 1.0)

    monkeypatch.setattr(unit.Linear, "forward", forward)
    return registered(pz.UMUP)


def _non_unit_init(monkeypatch):
    """Weights drawn at σ = init_std (SP's embedding rule) instead of unit variance."""
    table = {k: dataclasses.replace(r, init_fan_in="none") for k, r in pz.UMUP.table.items()}
    return registered(dataclasses.replace(pz.UMUP, table=table))


@pytest.mark.parametrize(
    "violation", [_no_fan_in_scale, _non_unit_init], ids=["no-1/sqrt(fan_in)", "non-unit-init"]
)
def test_the_coord_check_fails_umup_violations(run_cli, workdir, monkeypatch, violation):
    with violation(monkeypatch):
        r = run_cli(
            "coord-check",
            CONFIGS / "quickstart.yaml",
            "--smoke",
            "model.parametrization=umup",
            "--seeds",
            "2",
        )
        assert r.code == 1 and "FAIL" in r.out, r
        spec = config.load_spec(CONFIGS / "quickstart.yaml", ["model.parametrization=umup"], smoke=True)
        res = checks.coord_check(spec, seeds=2, mults=checks.GATE_MULTS)
    assert not res.passed
    # the unit-scale property fails too, naming a module out of unit scale
    assert any(" RMS " in f and "unit scale" in f for f in res.failures), res.failures


def test_inspect_shows_the_umup_table(run_cli, workdir):
    r = run_cli(
        "inspect",
        CONFIGS / "quickstart.yaml",
        "model.parametrization=umup",
        "--to",
        "width=256",
        "--format",
        "json",
    )
    assert r.code == 0, r
    import json

    rows = {p["name"]: p for p in json.loads(r.out)["parameters"]}
    hidden = rows["h.0.attn.c_attn.weight"]
    assert (
        hidden["proxy"]["init_std"] == 1.0 and hidden["target"]["init_std"] == 1.0
    )  # unit init at any width
    assert hidden["proxy"]["lr_mult"] == pytest.approx(64**-0.5 * 2**-0.5)  # fan_in^-1/2, depth 2^-1/2
    assert hidden["target"]["lr_mult"] == pytest.approx(256**-0.5 * 2**-0.5)
    assert rows["lm_head.weight"]["target"]["lr_mult"] == 1.0


def test_sweep_compares_umup_and_the_commands_run(run_cli, workdir):
    r = run_cli(
        "sweep",
        CONFIGS / "quickstart.yaml",
        "--smoke",
        "--compare",
        "umup",
        "train.steps=4",
        "train.warmup_steps=2",
    )
    assert r.code == 0, r
    r = run_cli(
        "search", CONFIGS / "quickstart.yaml", "--smoke", "model.parametrization=umup", "search.n_trials=2"
    )
    assert r.code == 0, r
    r = run_cli("transfer", workdir / "runs" / "quickstart-smoke", "--to", "width=128", "--smoke")
    assert r.code == 0, r


@pytest.mark.parametrize(
    "over, key",
    [
        ({"train.optimizer": "muon"}, "train.optimizer"),
        ({"search.space.init_std": "{type: log_uniform, low: 0.1, high: 1}"}, "search.space.init_std"),
        ({"model.base_depth": 2}, "model.base_depth"),
    ],
)
def test_what_umup_does_not_have_is_refused_by_name(run_cli, workdir, over, key):
    r = run_cli(
        "show-config",
        CONFIGS / "quickstart.yaml",
        "model.parametrization=umup",
        *[f"{k}={v}" for k, v in over.items()],
    )
    assert r.code == 2 and r.err.startswith(f"error: {key}:"), r


def test_a_family_without_a_unit_scaled_forward_is_refused(run_cli, workdir):
    r = run_cli("show-config", CONFIGS / "mlp.yaml", "model.parametrization=umup")
    assert r.code == 2 and r.err.startswith("error: model.parametrization:") and "gpt" in r.err, r


def test_umup_adds_and_changes_nothing_else():
    assert set(config.default_space("gpt")) == {"lr", "init_std", "alpha_in", "alpha_out", "alpha_attn"}
    space = config.default_space("gpt", "umup")
    assert set(space) == {
        "lr",
        "alpha_out",
        "alpha_attn",
        "alpha_res",
        "alpha_res_attn_ratio",
        "alpha_ffn_act",
    }
    assert pz.UMUP.clip == "none" and pz.UMUP.independent_weight_decay
