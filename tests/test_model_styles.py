"""The coord check on the ways people write models (tests/violations.py's STYLES), through the CLI:
each correct variant passes, each violation fails, or the check says "incomplete" where it truly
cannot see; a depth target a model cannot apply is refused by transfer and inspect; α_in is applied
once where input modules nest; search records an incomplete check in best.yaml."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mutune import config, models

from .conftest import write_spec
from .violations import STYLES

CHECKED = [n for n, s in STYLES.items() if s.outcome != "refused"]


def slopes(workdir) -> pd.DataFrame:
    return pd.read_csv(workdir / "runs" / "style" / "checks" / "coord_check_slopes.csv")


@pytest.mark.parametrize("name", CHECKED)
def test_each_model_style_correct_passes_broken_fails_or_incomplete(run_cli, workdir, name):
    style = STYLES[name]
    spec = write_spec(workdir / "ok.yaml", style.spec())
    r = run_cli("coord-check", spec, "--seeds", "1")
    s = slopes(workdir)
    if style.outcome == "incomplete":
        assert r.code == 1 and "INCOMPLETE" in r.out and "blocks.0.mix" in r.out, r
        assert set(s.verdict) == {"incomplete"} and not (s.status == "fail").any()
        r = run_cli("coord-check", spec, "--seeds", "1", "--allow-unchecked", "attention")
        assert r.code == 0 and "unchecked (allowed)" in r.out, r
    else:
        assert r.code == 0, r.out + r.err
        assert set(s.verdict) == {"pass"}
        attn = s[s.kind == "attn_logits"]
        assert len(attn) or name in ("nested_inputs",) or "mix" not in str(set(s.layer))
    broken = write_spec(workdir / "broken.yaml", style.spec(broken=True))
    with style.injected(broken=True):
        r = run_cli("coord-check", broken, "--seeds", "1")
    s = slopes(workdir)
    assert r.code == 1, r
    if style.outcome == "incomplete":
        assert "INCOMPLETE" in r.out and set(s.verdict) == {"incomplete"}
    else:
        assert "FAIL" in r.out and set(s.verdict) == {"fail"}


@pytest.mark.parametrize(
    "name", ["manual_softmax", "non_T_tokens", "eager_hf", "renamed_classes", "fused_qkv"]
)
def test_attention_scores_are_found_however_written_and_the_scale_read_exactly(name, tmp_path):
    """Every attention style's scores are recorded (two layers) and its scale × head dim read: flat
    for 1/d attention, +0.5 exactly for 1/√d with a growing head dim (5× the scale's limit, where
    the logits themselves show +0.3 to +0.5 against 0.3)."""
    from mutune import checks

    style = STYLES[name]
    for broken, want in ((False, 0.0), (True, 0.5)):
        spec = config.spec_from_dict(style.spec(broken))
        res = checks.coord_check(spec, mults=checks.GATE_MULTS, seeds=1, steps=2)
        s = res.slopes
        assert len(set(s[s.kind == "attn_logits"].layer)) == 2, set(s.layer)
        scale = s[s.kind == "attn_scale"]
        assert len(scale) == 2 and (abs(scale.slope - want) < 1e-6).all(), scale
        assert (scale.status == ("fail" if broken else "ok")).all()


def test_incomplete_check_is_printed_by_search_and_recorded_in_best_yaml(run_cli, workdir):
    spec = write_spec(workdir / "s.yaml", STYLES["unseen_attention"].spec())
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 0, r
    assert "coord check incomplete" in r.err and "'blocks.0.mix'" in r.err
    best = yaml.safe_load((workdir / "runs" / "style" / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "incomplete"
    # a spec key accepts it for coord-check (exit 0); search still records the truth
    ok = STYLES["unseen_attention"].spec()
    ok["model"]["allow_unchecked"] = ["attention"]
    r = run_cli("coord-check", write_spec(workdir / "ok.yaml", ok), "--seeds", "1")
    assert r.code == 0 and "unchecked (allowed)" in r.out, r


@pytest.mark.parametrize("command", ["transfer", "inspect"])
def test_depth_a_model_cannot_apply_is_refused(run_cli, workdir, command):
    """A factory that takes depth= but not residual_mult=: transfer --to depth=4 used to exit 0 with
    plan.yaml saying residual_mult 0.5 and a forward that never applied it. Refused by the one
    check (models.check_axes), naming the model and what it must accept; the correct variant runs."""
    style = STYLES["depth_without_residual_mult"]
    for broken in (False, True):
        spec = write_spec(workdir / f"d{broken}.yaml", {**style.spec(broken), "name": f"d{int(broken)}"})
        if command == "inspect":
            r = run_cli("inspect", spec, "--to", "depth=4", "--format", "json")
        else:
            assert run_cli("search", spec, "--no-transfer").code == 0
            r = run_cli("transfer", workdir / "runs" / f"d{int(broken)}", "--to", "depth=4")
        if not broken:
            assert r.code == 0, r
            continue
        assert r.code == 2, r
        line = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
        assert len(line) == 1 and "Traceback" not in r.err
        assert line[0].startswith(
            "error: model.factory: tests.model_styles:without_residual_mult cannot apply depth 4"
        )
        assert "must accept depth= (build that many blocks) and residual_mult=" in line[0]
    if command == "transfer":  # the correct variant's forward applies what plan.yaml says
        target = workdir / "runs" / "d0" / "target-depth4"
        plan = yaml.safe_load((target / "plan.yaml").read_text())
        assert plan["multipliers"]["residual_mult"] == 0.5
        tspec = config.load_spec(target / "config.yaml")
        model = models.build(tspec, tspec.hparams, 256)
        assert model.residual_mult == 0.5 and len(model.blocks) == 4
        assert not (workdir / "runs" / "d1" / "target-depth4" / "plan.yaml").exists()


def test_alpha_in_is_applied_once_where_input_modules_nest():
    """The token embedding inside a module that also holds a raw position table: both are input
    weights, so both modules held hooks and the tokens got α_in twice (×4 at α_in = 2). Now the
    outermost module alone: its output is exactly α_in × the unhooked output."""
    spec = config.spec_from_dict(STYLES["nested_inputs"].spec(), ["hparams.alpha_in=2.0"])
    model, infos = models.create(spec, spec.hparams, 256)
    assert model._mutune_inputs == ("embeddings",)
    assert infos["embeddings.position_embeddings"].role == "embedding"
    idx = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        hooked = model.embeddings(idx)
        e = model.embeddings
        plain = e.word_embeddings.weight[idx] + e.position_embeddings[:, :8]
    torch.testing.assert_close(hooked, 2.0 * plain)


def test_inspect_says_where_each_role_came_from(run_cli, workdir):
    """The module holding it, the forward's use of a raw parameter, or the user (model.roles), which
    overrides any parameter; a role for a parameter the model does not have is a named user error."""
    d = STYLES["fused_qkv"].spec()
    d["model"]["roles"] = {"wpe": "vector"}
    r = run_cli("inspect", write_spec(workdir / "s.yaml", d), "--format", "json")
    assert r.code == 0, r
    params = {p["name"]: p for p in yaml.safe_load(r.out)["parameters"]}
    assert params["wte"]["role"] == "embedding" and params["wte"]["role_source"].startswith(
        "use: indexed as a table"
    )
    assert params["wpe"]["role"] == "vector" and params["wpe"]["role_source"] == "user (roles)"
    assert params["head"]["role"] == "readout" and "x @ w" in params["head"]["role_source"]
    qkv = params["blocks.0.qkv"]
    assert qkv["role"] == "hidden" and "einsum btd,kde->kbte" in qkv["role_source"]
    assert qkv["proxy"]["init_std"] == pytest.approx(0.05)  # fan-in d (32 = base), not 3d or d²
    norm = params["blocks.0.n1.gain"]
    assert norm["role"] == "vector" and "elementwise" in norm["role_source"]
    r = run_cli("inspect", write_spec(workdir / "s.yaml", STYLES["nested_inputs"].spec()), "--format", "json")
    params = {p["name"]: p for p in yaml.safe_load(r.out)["parameters"]}
    assert params["embeddings.word_embeddings.weight"]["role_source"] == "module: Embedding"
    d["model"]["roles"] = {"wpx": "vector"}
    r = run_cli("inspect", write_spec(workdir / "s.yaml", d))
    assert r.code == 2 and r.err.startswith("error: model.roles.wpx:") and "did you mean 'wpe'" in r.err, r


def test_a_forward_the_meta_device_cannot_run_is_watched_on_a_cpu_copy():
    """``.item()`` in the forward: the raw position table's use is still seen (on a real copy at the
    base width), and the global random state is what it was (a run's dropout draws from it)."""
    d = STYLES["nested_inputs"].spec()
    d["model"]["factory"] = "tests.model_styles:item_raw_lm"
    spec = config.spec_from_dict(d)
    before = torch.random.get_rng_state()
    infos = models.classify(spec, spec.hparams, 256, width=64)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert (
        infos["pos"].role == "embedding"
        and infos["pos"].source == "use: indexed as a table (rows indexed, added)"
    )


def test_a_fused_qkv_trains_exactly_as_its_three_matrices():
    """A raw (3, d, d) q/k/v used through einsum, with its fan-in found to be d (it used to be d²,
    its init shrinking like 1/m), gets the init and LR of three separate (d, d) matrices: the same
    draws in the same order, so its coord-check records are its unfused twin's."""
    from mutune import checks

    runs = [
        checks.coord_check(config.spec_from_dict(STYLES[n].spec()), mults=(1, 4), seeds=1, steps=3).records
        for n in ("fused_qkv", "raw_parameters")
    ]
    fused, raw = (r.sort_values(["width", "t", "layer"]).reset_index(drop=True) for r in runs)
    assert list(fused.layer) == list(raw.layer)
    np.testing.assert_allclose(fused.l1, raw.l1, rtol=1e-4)
    np.testing.assert_allclose(fused.dl1, raw.dl1, rtol=1e-3, atol=1e-7)
    spec = config.spec_from_dict(STYLES["fused_qkv"].spec())
    infos = models.classify(spec, spec.hparams, 256, width=128)
    qkv = infos["blocks.0.qkv"]
    assert (qkv.fan_in, qkv.base_fan_in, qkv.fan_in_mult) == (128, 32, 4.0) and qkv.role == "hidden"
