"""Compute accounting: FLOPs against a hand count, and the search's FLOPs carried to best.yaml and the plan."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from mutune import config, flops, models, transfer
from mutune.train import train

from .conftest import TINY, write_spec

SMALL_GPT = {
    "model": {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 32},
    "train": {"steps": 10, "batch_size": 4, "warmup_steps": 2, "eval_every": 5, "eval_batches": 3},
}


def test_gpt_flops_per_token_match_a_hand_count():
    spec = config.spec_from_dict(SMALL_GPT)
    d, L, T, V = 64, 2, 32, 256  # width, depth, seq_len, vocab (bytes); mlp_ratio 4, no biases, untied
    # matmul weights per token, by hand:
    qkv = 3 * d * d  # 12288: c_attn, q, k and v stacked
    proj = d * d  # 4096: attention output
    mlp = 4 * d * d + 4 * d * d  # 32768: c_fc (d -> 4d) and c_proj (4d -> d)
    per_layer = qkv + proj + mlp  # 49152 = 12 d^2
    lm_head = d * V  # 16384
    n = L * per_layer + lm_head  # 114688 (embedding lookups are not matmuls)
    assert n == 114688
    # attention, per token and layer: q.k over T keys and the weighted sum of T values, 2*T*d each
    # forward (multiply-add = 2 FLOPs), x3 for forward + backward
    attention = L * 3 * (2 * T * d + 2 * T * d)  # 49152
    hand = 6 * n + attention  # 688128 + 49152 = 737280
    assert hand == 737280
    c = flops.cost(spec)
    assert c.matmul_params == n
    assert c.flops_per_token == pytest.approx(hand, rel=0.02)
    # all parameters: the matmuls plus token and position embeddings and 2L+1 LayerNorm gains
    assert c.params == n + V * d + T * d + (2 * L + 1) * d
    # per run: 10 steps of 4 x 32 tokens, 2 evaluations of 3 batches at a third of the cost
    assert c.tokens_per_step == 128 and c.train_flops == pytest.approx(10 * 128 * hand, rel=0.02)
    assert c.eval_flops == pytest.approx(2 * 3 * 128 * hand / 3, rel=0.02)


def test_matmul_part_matches_torch_flop_counter():
    """An independent count of the 6N part: torch's FlopCounterMode over a real forward + backward
    (it sees the matmuls; the CPU attention kernel is not among the ops it counts)."""
    spec = config.spec_from_dict(SMALL_GPT)
    model, _ = models.create(spec, spec.hparams, 256)
    x = torch.randint(0, 256, (4, 32))
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    measured_per_token = counter.get_total_flops() / (4 * 32)
    assert measured_per_token == pytest.approx(6 * flops.cost(spec).matmul_params, rel=1e-9)


def test_tied_readout_still_costs_its_matmul():
    tied = config.spec_from_dict(SMALL_GPT, ["model.tie_embeddings=true"])
    untied = config.spec_from_dict(SMALL_GPT)
    assert flops.cost(tied).matmul_params == flops.cost(untied).matmul_params
    assert flops.cost(tied).params == flops.cost(untied).params - 256 * 64


def test_a_run_reports_the_planned_flops():
    spec = config.spec_from_dict(SMALL_GPT)
    r = train(spec, spec.hparams)
    assert r.flops == pytest.approx(flops.cost(spec).total_flops, rel=1e-12)


def test_best_yaml_carries_the_search_flops_and_the_plan_their_share(run_cli, workdir):
    spec = write_spec(workdir / "t.yaml", {**TINY, "target": {"width": 64}})
    r = run_cli("search", spec)
    assert r.code == 0, r
    run = workdir / "runs" / "tiny"
    trials = pd.read_csv(run / "trials.csv")
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["provenance"]["search_flops"] == pytest.approx(trials.flops.sum(), rel=1e-12)
    assert best["provenance"]["search_flops"] > 0
    plan = yaml.safe_load((run / "target-width64" / "plan.yaml").read_text())
    target = config.spec_from_dict(TINY, ["model.width=64"])
    target_flops = flops.cost(target).total_flops
    assert plan["cost"]["total_flops"] == pytest.approx(target_flops)
    assert plan["search_flops"] == best["provenance"]["search_flops"]
    assert plan["tuning_cost_pct"] == pytest.approx(100 * trials.flops.sum() / target_flops)
    # the target's own run matches its plan
    result = yaml.safe_load((run / "target-width64" / "result.yaml").read_text())
    assert result["flops"] == pytest.approx(target_flops)
    # and the printed plan states it (loosely: the table may wrap the line)
    p = transfer.plan(run, ["width=64"])
    assert p.tuning_cost_pct == pytest.approx(plan["tuning_cost_pct"])
    r = run_cli("transfer", run, "--to", "width=64", "--dry-run")
    assert r.code == 0 and "search compute" in r.out and f"{p.tuning_cost_pct:.1f}%" in r.out


def test_numbers_for_people_stay_readable_at_pretraining_scale():
    from mutune.units import human, human_bytes

    assert human(1_737_984) == "1.74M"
    assert human(4.58e12, " FLOPs") == "4.58T FLOPs"
    assert human(1.295e22) == "13Z"  # one style beside '907E' on a plan's line, not '1.3e+22'
    assert human(9.07e20, " FLOPs") == "907E FLOPs" and human(2e24) == "2Y"
    assert human_bytes(139 * 2**20) == "139 MiB"
