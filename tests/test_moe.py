"""The moe family: a GPT whose MLPs are mixtures of experts; the router as µP's own role; the coord
check passing under µP and failing under SP and without the router's 1/m; the refusals; every
expert in the graph; the FLOPs of the active experts; a search and a transfer."""

from __future__ import annotations

import shutil

import pytest
import torch

from mutune import checks, config, flops, models, search

from .conftest import TINY, write_spec
from .violations import violation

SIGMA, LR, WD, EPS = 0.05, 0.01, 0.1, 1e-8

MOE = {
    **TINY,
    "name": "tiny-moe",
    "model": {**TINY["model"], "family": "moe", "n_experts": 4, "top_k": 2},
    "hparams": {"lr": LR, "weight_decay": WD, "init_std": SIGMA},
}


def moe_spec(*over: str, **model) -> config.Spec:
    return config.spec_from_dict({**MOE, "model": {**MOE["model"], **model}}, list(over))


def groups(spec):
    model, infos = models.create(spec, spec.hparams, 256)
    by_name = {n: g for g in models.param_groups(spec, model, infos, spec.hparams) for n in g["names"]}
    return model, infos, by_name


def test_roles_and_width_rules_on_named_parameters():
    """m = 4 (width 128, base 32): the router is a readout of its own (constant init σ, AdamW LR η,
    ε/m, logits × 1/m); each expert's matrices are hidden ones (σ/√m, η/m, λ·m, ε/m)."""
    spec = moe_spec(width=128, base_width=32)
    model, infos, g = groups(spec)
    m = 4.0
    router, c_fc = "h.0.mlp.router.weight", "h.0.mlp.experts.3.c_fc.weight"
    assert infos[router].role == "router" and infos[router].shape == (4, 128)
    assert infos[c_fc].role == "hidden"
    assert g[router]["lr"] == LR and g[router]["eps"] == pytest.approx(EPS / m)
    assert g[c_fc]["lr"] == pytest.approx(LR / m) and g[c_fc]["weight_decay"] == pytest.approx(WD * m)
    assert model.h[0].mlp.router.weight.std().item() == pytest.approx(SIGMA, rel=0.2)
    assert model.h[0].mlp.router.mult == 1 / m == models.forward_multipliers(spec).router
    assert model.h[0].mlp.experts[3].c_fc.weight.std().item() == pytest.approx(SIGMA / m**0.5, rel=0.1)


def test_at_the_base_width_mup_and_sp_are_the_same_model():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 16))
    losses = []
    for p in ("mup", "sp"):
        model, _ = models.create(moe_spec(f"model.parametrization={p}"), moe_spec().hparams, 256)
        losses.append(model(x, x)[1].item())
    assert losses[0] == losses[1]


def test_the_gates_are_a_convex_combination_of_top_k_experts():
    spec = moe_spec()
    model, _ = models.create(spec, spec.hparams, 256)
    moe = model.h[0].mlp
    x = torch.randn(2, 8, 32)
    out = moe(x)
    flat = x.reshape(-1, 32)
    probs = torch.softmax(moe.router(flat), dim=-1)
    top_p, top_i = probs.topk(2, dim=-1)
    gates = top_p / top_p.sum(-1, keepdim=True)
    expected = torch.stack(
        [sum(gates[n, j] * moe.experts[int(top_i[n, j])](flat[n]) for j in range(2)) for n in range(16)]
    )
    torch.testing.assert_close(out.reshape(-1, 32), expected, rtol=1e-5, atol=1e-6)


def test_balance_loss_joins_the_training_loss_only():
    spec = moe_spec(balance=0.5)
    model, _ = models.create(spec, spec.hparams, 256)
    x = torch.randint(0, 256, (2, 16))
    train_loss = model(x, x)[1]
    balance = torch.stack([b.mlp.balance_loss for b in model.h]).mean()
    assert 1.0 <= balance.item() < 4.0  # n_experts·Σ f_e·P_e: 1 when the load is even, n_experts at worst
    model.eval()
    eval_loss = model(x, x)[1]
    assert train_loss.item() == pytest.approx(eval_loss.item() + 0.5 * balance.item(), rel=1e-6)


def test_every_expert_is_in_the_graph_even_when_no_token_reaches_it():
    """DDP and FSDP reduce every parameter's gradient: an expert that sat out a step must still get one."""
    spec = moe_spec()
    model, _ = models.create(spec, spec.hparams, 256)
    favour = torch.tensor([5.0, 5.0, 0.0, 0.0])  # on the router's logits: experts 2 and 3 never chosen
    hooks = [b.mlp.router.register_forward_hook(lambda m, a, out: out + favour) for b in model.h]
    x = torch.randint(0, 256, (2, 16))
    model(x, x)[1].backward()
    for h in hooks:
        h.remove()
    unused = model.h[0].mlp.experts[3].c_fc.weight
    assert unused.grad is not None and unused.grad.abs().sum().item() == 0.0
    assert model.h[0].mlp.experts[0].c_fc.weight.grad.abs().sum().item() > 0


def test_blocks_are_the_transformer_blocks_not_the_experts():
    spec = moe_spec()
    with torch.device("meta"):
        model = models.build(spec, spec.hparams, 256)
    assert models.blocks(model) == list(model.h)
    c = flops.cost(spec)
    assert c.memory.n_blocks == 1 and c.memory.root_params > 0


def test_flops_count_the_active_experts_only():
    """6N with N the weights a token meets: the router and top_k of the n_experts experts."""
    dense = config.spec_from_dict({**TINY, "model": {**TINY["model"]}})
    w, v, T, L = 32, 256, 32, 1
    attention = 12.0 * L * T * w
    mlp = 2 * 4 * w * w  # one expert (the GPT's MLP)
    for n, k in ((4, 2), (8, 2), (8, 4)):
        moe = flops.cost(moe_spec(n_experts=n, top_k=k)).flops_per_token
        assert moe == pytest.approx(flops.cost(dense).flops_per_token + 6.0 * (w * n + (k - 1) * mlp))
    assert flops.cost(dense).flops_per_token == 6.0 * (L * (4 * w * w + mlp) + v * w) + attention


@pytest.mark.parametrize(
    "over, key, words",
    [
        (["model.top_k=1"], "model.top_k", "renormalised"),
        (["model.top_k=5"], "model.top_k", "more than model.n_experts=4"),
        (["model.n_experts=0"], "model.n_experts", ""),
        (["model.balance=-1"], "model.balance", ""),
    ],
)
def test_bad_moe_input_is_one_line_naming_the_key(run_cli, workdir, over, key, words):
    spec = write_spec(workdir / "moe.yaml", MOE)
    r = run_cli("show-config", spec, *over)
    assert r.code == 2 and r.err.startswith(f"error: {key}:") and words in r.err, r
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_coord_check_passes_under_mup_and_fails_under_sp():
    res = checks.coord_check(moe_spec(), mults=checks.GATE_MULTS, seeds=2, compare="sp")
    assert res.passed, res.message()
    assert not res.control.passed
    own = res.slopes[(res.slopes.metric == "own") & (res.slopes.layer == "h.0.mlp.router")]
    assert len(own) and (own.status == "ok").all()  # the router's own update is checked, and flat


@pytest.mark.parametrize("broken", ["no_router_mult", "router*m"])
def test_coord_check_fails_without_the_routers_rule(broken):
    """The router's logits without their 1/m (a router treated as a hidden layer's output), or its LR
    ×m: its own update grows with width."""
    with violation(broken):
        res = checks.coord_check(moe_spec(), mults=checks.GATE_MULTS, seeds=2)
    assert not res.passed
    assert any(f.startswith("h.0.mlp.router own update") for f in res.failures), res.failures


def test_search_and_transfer_smoke(run_cli, workdir):
    spec = write_spec(workdir / "moe.yaml", MOE)
    r = run_cli("search", spec, "--smoke", "--no-transfer", "--run-dir", workdir / "run", "-q")
    assert r.code == 0, r
    r = run_cli("transfer", workdir / "run", "--to", "width=64", "--smoke", "-q")
    assert r.code == 0, r
    assert (workdir / "run" / "target-width64" / "result.yaml").is_file()


def test_init_writes_a_moe_spec_that_validates(run_cli, workdir):
    assert run_cli("init", workdir / "m.yaml", "--model", "moe").code == 0
    assert config.load_spec(workdir / "m.yaml").model.n_experts == 4


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(workdir, parallel):
    """Every expert runs at every step, so DDP's reduction (every parameter in the graph) and FSDP's
    units (the blocks, experts inside) work; the same global batch gives the same losses. Without the
    balancing loss: it is a product of means per rank, not of the global batch."""
    from .test_fsdp import _curve, _ok
    from .test_robustness import finish, mutune

    spec = config.spec_from_dict(
        {**MOE, "model": {**MOE["model"], "balance": 0.0}, "search": {"n_trials": 1}}
    )
    run = workdir / "runs" / "moe"
    search.search(spec, run_dir=run, transfer=False, argv=["test"])
    twin = workdir / "runs" / "twin"
    shutil.copytree(run, twin)
    cmd = ["--to", "width=64", "--smoke"]
    code, _, err = finish(
        mutune("transfer", run, *cmd, "--nproc", "2", f"train.parallel={parallel}", cwd=workdir)
    )
    _ok(code, err, run / "target-width64")
    code, _, err = finish(mutune("transfer", twin, *cmd, cwd=workdir))
    assert code == 0, err
    two, one = _curve(run / "target-width64"), _curve(twin / "target-width64")
    assert len(two) == len(one) == 2 and two == pytest.approx(one, rel=1e-5)
