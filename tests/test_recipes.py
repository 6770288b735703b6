"""The two published µTransfer recipes shipped as configs: TP5's GPT-3 6.7B and Cerebras-GPT's µP family.

Their dry-run plans are checked against the published sizes; both run end to end with --smoke on the
built-in corpus (their own data.path is the user's, absent here), so CI proves they stay valid.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml

from mutune import config, flops, models, planning
from mutune.errors import MutuneWarning

from .conftest import CONFIGS, TINY, write_spec

GPT3 = CONFIGS / "gpt3-6.7b.yaml"
CEREBRAS = CONFIGS / "cerebras-gpt.yaml"

# Cerebras-GPT µP family (Model Zoo configs, Cerebras-GPT README tables): published size,
# d_model, layers, steps x batch (sequences of 2048) -> published tokens (20 per parameter).
CEREBRAS_SIZES = {
    "111M": (111e6, 768, 10, 9037, 120, 2.22e9),
    "256M": (256e6, 1088, 14, 9468, 264, 5.12e9),
    "590M": (590e6, 1536, 18, 21836, 264, 1.18e10),
    "1.3B": (1.3e9, 2048, 24, 24334, 528, 2.63e10),
    "2.7B": (2.7e9, 2560, 32, 49041, 528, 5.30e10),
}


@pytest.mark.parametrize("path", [GPT3, CEREBRAS], ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_with_smoke_on_the_builtin_corpus(path, run_cli, workdir):
    r = run_cli("search", path, "--smoke")
    assert r.code == 0, r
    run = workdir / "runs" / f"{path.stem}-smoke"
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (data["corpus"], data["path"]) == ("stdlib", None)  # the recipe's tokens path is not here
    assert "data.path" in r.err and "built-in corpus" in r.err
    assert yaml.safe_load((run / "best.yaml").read_text())["provenance"]["loss"] > 0
    assert yaml.safe_load((run / "target-width64" / "result.yaml").read_text())["final_val_loss"] > 0


def test_gpt3_6p7b_dry_run_plans_the_paper_shape_and_a_7_percent_search(run_cli, workdir):
    r = run_cli("transfer", GPT3, "--dry-run", "--save-plan", "plan.yaml")
    assert r.code == 0, r
    plan = yaml.safe_load((workdir / "plan.yaml").read_text())
    assert plan["width"] == 4096 and plan["proxy_width"] == 256
    assert plan["cost"]["params"] == pytest.approx(6.7e9, rel=0.02)
    assert plan["cost"]["tokens_per_step"] * plan["cost"]["steps"] == pytest.approx(300e9, rel=1e-3)
    # the search as the spec plans it: n_trials full proxy runs, costed like the target
    proxy = config.load_spec(GPT3)
    assert plan["search_planned"] is True
    assert plan["search_flops"] == pytest.approx(proxy.search.n_trials * flops.cost(proxy).total_flops)
    assert plan["tuning_cost_pct"] == pytest.approx(100 * plan["search_flops"] / plan["cost"]["total_flops"])
    assert 6.5 <= plan["tuning_cost_pct"] <= 7.5  # TP5: "tuning cost only 7% of total pretraining cost"
    assert f"{plan['tuning_cost_pct']:.1f}%" in r.out.replace("\n", " ")  # printed too
    assert not (workdir / "runs").exists()  # a plan allocates and writes nothing else
    # the spec's own target is width 4096: naming it gives the same plan
    assert run_cli("transfer", GPT3, "--dry-run", "--to", "width=4096").code == 0


@pytest.mark.parametrize("size", CEREBRAS_SIZES)
def test_cerebras_gpt_family_plans_at_the_published_sizes(size):
    published, width, depth, steps, batch, tokens = CEREBRAS_SIZES[size]
    to = [f"width={width}", f"depth={depth}", f"train.steps={steps}", f"train.batch_size={batch}"]
    p = planning.plan(CEREBRAS, to, dry_run=True)
    assert p.cost.params == pytest.approx(published, rel=0.05)
    assert p.cost.tokens_per_step * p.cost.steps == pytest.approx(tokens, rel=2e-3)
    assert p.hparams.lr == 6e-3 and p.hparams.init_std == 0.08 and p.hparams.alpha_in == 10.0
    assert p.spec.model.base_width == 256 and p.spec.model.depth_alpha == 0  # Cerebras: no depth scaling


def test_cerebras_attention_is_qk_over_d_head():
    """Cerebras's QKᵀ/d_head (scale_qk_dot_by_d, α = 1) is mutune's α_attn·√d_base/d at α_attn = 1/8."""
    spec = config.load_spec(CEREBRAS)
    for width in (256, 2560):
        with torch.device("meta"):
            gpt = models.build(spec, spec.hparams, 256, width)
        assert gpt.h[0].attn.attn_scale == pytest.approx(1 / 64)  # d_head 64 at every width
        assert gpt.cfg.output_mult == pytest.approx(256 / width)  # logits x 1/m (output_logits_alpha 1)
        assert gpt.cfg.input_mult == 10.0  # embeddings_scale


def test_a_spec_file_is_planned_only_with_dry_run(run_cli, workdir):
    r = run_cli("transfer", GPT3)
    assert r.code == 2 and "--dry-run" in r.err
    r = run_cli("transfer", GPT3, "--save-plan", "p.yaml")
    assert r.code == 2 and "--save-plan" in r.err
    r = run_cli("transfer", GPT3, "--dry-run", "--save-plan", "nowhere/p.yaml")
    assert r.code == 2 and "--save-plan" in r.err
    assert not (workdir / "runs").exists()


def _tokens(path, n=4096, vocab=50257):
    np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16).tofile(path)
    return path


def test_smoke_keeps_data_that_is_here_and_swaps_data_that_is_not(workdir):
    data = {"corpus": "tokens", "path": "tok.bin", "vocab_size": 50257}
    strict = write_spec(workdir / "s.yaml", {**TINY, "data": data})
    with pytest.raises(config.SpecError, match="tok.bin not found"):  # --smoke hides no broken spec
        config.load_spec(strict, smoke=True)
    spec = write_spec(workdir / "t.yaml", {**TINY, "data": {**data, "smoke_fallback": True}})
    with pytest.warns(MutuneWarning, match="tok.bin not found"):  # unless the spec says to fall back
        missing = config.load_spec(spec, smoke=True)
    assert (missing.data.corpus, missing.data.vocab_size) == ("stdlib", None)
    assert config.load_spec(spec).data.corpus == "tokens"  # only the smoke variant swaps

    _tokens(workdir / "tok.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MutuneWarning)  # data that is here: no swap, nothing to say
        here = config.load_spec(spec, smoke=True)
    assert (here.data.corpus, here.data.path) == ("tokens", "tok.bin")
    # a path given on the command line is the one checked, not the file's
    _tokens(workdir / "mine.bin")
    mine = config.load_spec(CEREBRAS, ["data.path=mine.bin"], smoke=True)
    assert (mine.data.corpus, mine.data.path, mine.data.vocab_size) == ("tokens", "mine.bin", 50257)
