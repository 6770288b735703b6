"""The coord check: verdicts asserted on the written CSVs; the search gate before the first trial."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from mutune import checks, config
from mutune.config import SpecError

from .conftest import CONFIGS, TINY, write_spec
from .violations import violation


def slopes_csv(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "checks" / "coord_check_slopes.csv")


def factory_spec(fn: str, **model) -> dict:
    """A tiny spec for a model in tests/factory_models.py (no α_attn: these models take none)."""
    return {
        **TINY,
        "model": {
            "family": "factory",
            "factory": f"tests.factory_models:{fn}",
            "width": 32,
            "base_width": 32,
            "seq_len": 32,
            **model,
        },
        "search": {
            "n_trials": 2,
            "space": {
                "lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1},
                "alpha_out": {"type": "log_uniform", "low": 0.5, "high": 2.0},
            },
        },
    }


def test_quickstart_passes_and_its_sp_twin_fails(run_cli, workdir):
    """The acceptance check, at the quickstart's own widths (64..1024)."""
    r = run_cli("coord-check", CONFIGS / "quickstart.yaml", "--compare", "sp", "--seeds", "2")
    assert r.code == 0, r
    run = workdir / "runs" / "quickstart"
    s = slopes_csv(run)
    assert (run / "checks" / "coord_check.png").stat().st_size > 10_000
    mup, sp = s[s.parametrization == "mup"], s[s.parametrization == "sp"]
    assert set(mup.verdict) == {"pass"} and set(sp.verdict) == {"fail"}
    assert set(mup.status) <= {"ok", "exempt"}
    assert (mup[mup.status == "ok"].slope.abs() <= checks.THRESHOLD).all()
    # the only exemptions are µP's shrinking logits while t < 2, each with its reason
    exempt = mup[mup.status == "exempt"]
    assert set(exempt.layer) == {"logits"} and (exempt.t < 2).all() and (exempt.slope < 0).all()
    assert exempt.reason.str.contains("TP5 App. D.1").all()
    # SP: the logits grow about linearly with width once trained, and so do the blocks
    sp_logits = sp[(sp.layer == "logits") & (sp.t >= 2)]
    assert (sp_logits.slope > 0.5).all() and (sp_logits.status == "fail").all()
    assert (sp[(sp.layer == "h.1") & (sp.t >= 2)].slope > 1.0).all()
    records = pd.read_csv(run / "checks" / "coord_check.csv")
    assert set(records.width) == {64, 128, 256, 512, 1024} and set(records.t) == {0, 1, 2, 3, 4}
    assert set(records.seed) == {0, 1} and set(records.parametrization) == {"mup", "sp"}
    assert {"embedding", "h.0", "h.0.attn.logits", "h.1.attn.logits", "logits"} <= set(records.layer)


def test_sp_spec_exits_1(run_cli, tiny_spec, workdir):
    r = run_cli("coord-check", tiny_spec, "model.parametrization=sp", "--seeds", "1")
    assert r.code == 1, r
    s = slopes_csv(workdir / "runs" / "tiny")
    assert set(s.verdict) == {"fail"} and set(s.parametrization) == {"sp"}
    assert (s[(s.layer == "logits") & (s.t >= 2)].status == "fail").all()


def test_smoke_and_run_dir(run_cli, tiny_spec, workdir):
    r = run_cli("coord-check", tiny_spec, "--smoke", "--run-dir", workdir / "elsewhere", "--seeds", "1")
    assert r.code == 0, r
    s = slopes_csv(workdir / "elsewhere")
    assert set(s.verdict) == {"pass"}
    records = pd.read_csv(workdir / "elsewhere" / "checks" / "coord_check.csv")
    assert sorted(set(records.width)) == [32, 64, 128, 256, 512]


@pytest.mark.parametrize(
    "args, key",
    [
        (["--compare", "ntk"], "--compare"),
        (["--seeds", "0"], "--seeds"),
        (["model.parametrization=sp", "--compare", "sp"], "--compare"),
        (["model.widht=64"], "model.widht"),
    ],
)
def test_user_errors_exit_2(run_cli, tiny_spec, workdir, args, key):
    r = run_cli("coord-check", tiny_spec, *args)
    assert r.code == 2 and key in r.err, r
    assert not (workdir / "runs" / "tiny" / "checks").exists()


def test_zero_init_readout_is_a_named_exception():
    spec = config.spec_from_dict(TINY, ["model.zero_init_readout=true"])
    res = checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=1)
    assert res.passed, res.message()
    row = res.slopes[(res.slopes.layer == "logits") & (res.slopes.t == 0)].iloc[0]
    assert row.status == "exempt" and "zero-initialised" in row.reason and math.isnan(row.slope)


def test_attention_scale_of_a_user_model_is_checked():
    """Two heads at every width (d_head grows) with SDPA's default 1/√d_head: its scale × head dim
    grows like width^+0.5 exactly (5× its limit), and the attention logits grow like a power of
    width once q and k align (+0.3 over these tiny widths in 4 steps, +0.5 in the limit). mutune
    does not touch a user's attention; the check names the offending layer."""
    spec = config.spec_from_dict(factory_spec("sqrt_attention_lm"))
    res = checks.coord_check(spec, seeds=2)
    assert not res.passed
    failing = res.slopes[res.slopes.status == "fail"]
    assert set(failing.layer) == {"layers.1.logits", "layers.1.scale"} and (failing.slope > 0).all()
    logits, scale = failing[failing.kind == "attn_logits"], failing[failing.kind == "attn_scale"]
    assert (logits.t >= 1).all() and len(logits)
    assert list(scale.t) == [0] and scale.slope.iloc[0] == pytest.approx(0.5, abs=1e-6)
    assert res.message().index(
        "layers.1.scale scale × head dim: slope +0.50 (limit ±0.1)"
    ) < res.message().index("layers.1.logits")  # the strongest sign first


def test_sdpa_is_restored_and_python_api_returns_data():
    originals = (F.scaled_dot_product_attention, F.softmax, F.log_softmax, F.dropout)
    spec = config.spec_from_dict(TINY)
    res = checks.coord_check(spec, widths=[32, 64], seeds=1, steps=2)
    assert (F.scaled_dot_product_attention, F.softmax, F.log_softmax, F.dropout) == originals
    assert not torch._C._is_torch_function_mode_enabled()
    assert res.widths == [32, 64] and res.steps == 2 and res.files == {}
    assert set(res.records.columns) >= {"width", "seed", "t", "layer", "kind", "l1"}
    with pytest.raises(SpecError, match="two widths"):
        checks.coord_check(spec, widths=[32])


# ---------------------------------------------------------------------------------------------
# The gate in `mutune search`


def test_search_records_a_passed_gate_and_does_not_rerun_it_on_resume(run_cli, tiny_spec, workdir):
    r = run_cli("search", tiny_spec, "--no-transfer", "search.n_trials=2")
    assert r.code == 0, r
    run = workdir / "runs" / "tiny"
    gate = run / "checks" / "gate_coord_check_slopes.csv"
    assert set(pd.read_csv(gate).verdict) == {"pass"}
    assert yaml.safe_load((run / "best.yaml").read_text())["provenance"]["coord_check"] == "passed"
    gate.unlink()
    r = run_cli("search", tiny_spec, "--no-transfer", "search.n_trials=3")
    assert r.code == 0, r
    assert not gate.exists()  # the study remembered that it passed
    assert yaml.safe_load((run / "best.yaml").read_text())["provenance"]["coord_check"] == "passed"


def test_broken_readout_fails_the_gate_naming_the_layer(run_cli, workdir):
    """µP deliberately broken: the model computes its logits with F.linear(x, unembed.weight), so
    mutune's α_out/m (a hook on the `unembed` module) never runs and the logits grow with width."""
    spec = write_spec(workdir / "broken.yaml", factory_spec("conv_lm_bypass"))
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 1, r
    assert "coord check" in r.err and "logits" in r.err and "unembed" in r.err and "--skip-check" in r.err
    run = workdir / "runs" / "tiny"
    s = pd.read_csv(run / "checks" / "gate_coord_check_slopes.csv")
    assert set(s.verdict) == {"fail"}
    assert (s[(s.layer == "logits") & (s.t >= 1)].slope > 0.4).all()
    assert (run / "checks" / "gate_coord_check.png").is_file()
    assert not (run / "trials.csv").exists() and not (run / "best.yaml").exists()
    # --skip-check searches anyway, and says so in the provenance
    r = run_cli("search", spec, "--no-transfer", "--skip-check")
    assert r.code == 0, r
    assert yaml.safe_load((run / "best.yaml").read_text())["provenance"]["coord_check"] == "skipped"


def test_sp_search_is_not_gated(run_cli, tiny_spec, workdir):
    r = run_cli("search", tiny_spec, "--no-transfer", "model.parametrization=sp", "search.n_trials=1")
    assert r.code == 0, r
    best = yaml.safe_load((workdir / "runs" / "tiny" / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "not_applicable"


# ---------------------------------------------------------------------------------------------
# Every deliberate violation fails; correct µP passes with room to spare (docs/mup.md §3)

VIOLATION_SPEC = {
    **TINY,
    "model": {
        "family": "gpt",
        "width": 32,
        "base_width": 32,
        "depth": 2,
        "head_dim": 16,
        "seq_len": 32,
        "bias": True,
    },
}
# violation -> (kind or layer that must fail, measures, sign of the failing slope)
DETECTS = {
    "embedding/m": ("embedding", ("dx",), -1),
    "embedding*m": ("embedding", ("x", "dx"), +1),
    "hidden/m": ("block", ("x", "dx", "own"), -1),
    "hidden*m": ("block", ("x", "dx"), +1),
    "readout/m": ("logits", ("x", "dx"), -1),
    "readout*m": ("logits", ("x", "dx"), +1),
    "vector/m": ("leaf", ("own",), -1),
    "vector*m": ("leaf", ("own",), +1),
    "no_readout_mult": ("logits", ("x", "dx"), +1),
    "sqrt_attention": ("attn_logits", ("x", "dx"), +1),
}


def _gate(spec_dict: dict, name: str, out) -> pd.DataFrame:
    spec = config.spec_from_dict(spec_dict)
    with violation(name):
        checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=2, out_dir=out, plot=False)
    return pd.read_csv(out / "coord_check_slopes.csv")


@pytest.mark.parametrize("name", sorted(DETECTS))
def test_each_deliberate_violation_fails_the_gate(name, tmp_path):
    """Each LR class ÷ m and × m, the readout multiplier left out, 1/√d attention with fixed heads:
    the gate's check (widths × 1..8, 2 seeds) fails, and fails where the violation is."""
    d = VIOLATION_SPEC
    if name == "sqrt_attention":  # a violation only where the head dim grows: two heads at every width
        d = {**d, "model": {**d["model"], "head_dim": None, "n_head": 2}}
    s = _gate(d, name, tmp_path)
    assert set(s.verdict) == {"fail"}
    where, measures, sign = DETECTS[name]
    hit = s[(s.status == "fail") & ((s.kind == where) | (s.layer == where)) & s.metric.isin(measures)]
    assert len(hit) and (np.sign(hit.slope) == sign).all(), s[s.status == "fail"]
    assert (hit.slope.abs() > hit.limit).all()


@pytest.mark.parametrize("heads", [{}, {"head_dim": None, "n_head": 2}])
def test_correct_mup_passes_the_gate_with_room(heads, tmp_path):
    """The same model, unbroken, passes; its closest slope stays under 85% of its limit (the margin
    docs/mup.md reports), with the head dim fixed or growing."""
    d = {**VIOLATION_SPEC, "model": {**VIOLATION_SPEC["model"], **heads}}
    spec = config.spec_from_dict(d)
    res = checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=2, out_dir=tmp_path, plot=False)
    s = pd.read_csv(tmp_path / "coord_check_slopes.csv")
    assert res.passed and set(s.verdict) == {"pass"}, res.message()
    assert res.margin < 0.85, res.message()
    assert set(s.metric) == {"x", "dx", "own"} and set(s.status) <= {"ok", "exempt"}
    ok = s[s.status == "ok"]
    assert (ok.slope.abs() <= ok.limit).all()


def test_nested_blocks_attention_and_logits_of_a_nanogpt_model(tmp_path):
    """nanoGPT's layout (blocks in transformer.h, tied wte/lm_head, forward(idx, targets)), with
    dropout: every block, every module inside it and every attention is recorded; it passes."""
    spec = config.spec_from_dict(factory_spec("nanogpt", factory_kwargs={"dropout": 0.1}))
    res = checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=2, out_dir=tmp_path, plot=False)
    assert res.passed and not res.warnings, res.message()
    records = pd.read_csv(tmp_path / "coord_check.csv")
    layers = set(records.layer)
    assert {"embedding", "transformer.h.0", "transformer.h.1", "transformer.ln_f", "logits"} <= layers
    assert {"transformer.h.0.attn.logits", "transformer.h.1.attn.logits"} <= layers
    assert {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc", "transformer.h.0.ln_1"} <= layers
    kinds = records.groupby("layer").kind.first()
    assert kinds["transformer.h.0"] == "block" and kinds["transformer.h.0.mlp.c_fc"] == "leaf"
    # dropout is off during the check: nothing moves before the first update
    assert (records[records.t == 0].dl1 == 0).all()


def test_bmm_attention_with_fixed_heads_fails_and_with_fixed_head_dim_passes(tmp_path):
    """Post-LayerNorm blocks, attention written with torch.bmm + softmax at 1/√d_head, a raw
    position table and a log_softmax output. Two heads at every width: the attention logits grow
    and the check says where. Heads of fixed size: it passes."""
    spec = config.spec_from_dict(factory_spec("bmm_fixed_heads"))
    res = checks.coord_check(
        spec, mults=checks.GATE_MULTS, seeds=2, out_dir=tmp_path / "fixed_heads", plot=False
    )
    s = pd.read_csv(tmp_path / "fixed_heads" / "coord_check_slopes.csv")
    assert not res.passed and set(s.verdict) == {"fail"}
    failing = s[s.status == "fail"]
    assert set(failing.kind) == {"attn_logits", "attn_scale"} and (failing.slope > failing.limit).all()
    assert set(failing.layer) <= {f"blocks.{i}.attn.{w}" for i in (0, 1) for w in ("logits", "scale")}
    scale = s[s.kind == "attn_scale"]  # torch.bmm(q, kᵀ) / √d_head: the scale read off the scores
    assert set(scale.layer) == {"blocks.0.attn.scale", "blocks.1.attn.scale"}
    assert np.allclose(scale.slope, 0.5, atol=1e-6) and (scale.status == "fail").all()
    records = pd.read_csv(tmp_path / "fixed_heads" / "coord_check.csv")
    # the logits are recorded before the log_softmax: |log p| would be about ln(256) = 5.5
    assert records[(records.layer == "logits") & (records.t == 0)].l1.max() < 1.0
    ok = checks.coord_check(
        config.spec_from_dict(factory_spec("bmm_fixed_head_dim")), mults=checks.GATE_MULTS, seeds=2
    )
    assert ok.passed, ok.message()
    scale = ok.slopes[ok.slopes.kind == "attn_scale"]  # a fixed head dim: 1/√d_head is a constant
    assert len(scale) == 2 and (scale.slope.abs() < 1e-6).all() and (scale.status == "ok").all()


def test_attention_the_check_cannot_see_is_incomplete_not_a_pass(tmp_path):
    """A module named like attention whose scores are never normalised (a sigmoid of them): not a
    silent pass. The verdict is incomplete, naming it; allowed (--allow-unchecked attention), it passes
    on the rest and still names it."""
    spec = config.spec_from_dict(factory_spec("sigmoid_attention_lm"))
    res = checks.coord_check(spec, widths=[32, 64], seeds=1, steps=3, out_dir=tmp_path, plot=False)
    assert res.verdict == "incomplete" and not res.passed and not res.failures, res.message()
    assert res.unchecked == ["blocks.0"] and "INCOMPLETE" in res.message() and "'blocks.0'" in res.message()
    assert "--allow-unchecked attention" in res.message()
    s = pd.read_csv(tmp_path / "coord_check_slopes.csv")
    row = s[s.status == "not_found"]
    assert list(row.layer) == ["blocks.0.logits"] and "not checked" in row.reason.iloc[0]
    assert set(s.verdict) == {"incomplete"}
    allowed = checks.coord_check(spec, widths=[32, 64], seeds=1, steps=3, allow_unchecked=["attention"])
    assert (
        allowed.passed and allowed.verdict == "pass" and "'blocks.0' unchecked (allowed)" in allowed.message()
    )
    with pytest.raises(SpecError, match="--allow-unchecked"):
        checks.coord_check(spec, widths=[32, 64], allow_unchecked=["everything"])


def test_multihead_attention_is_seen_inside_torch(tmp_path):
    """nn.MultiheadAttention computes its attention in torch's own Python code; its (1, 1, E)
    bias_k is a vector. Its logits are recorded and µP passes."""
    spec = config.spec_from_dict(factory_spec("mha_lm"))
    res = checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=2, out_dir=tmp_path, plot=False)
    assert res.passed and not res.warnings, res.message()
    assert "attn.logits" in set(pd.read_csv(tmp_path / "coord_check.csv").layer)
