"""Models that are not language models: a factory model with model.task: classification, trained on
the (x, y) examples of a user data module (data.module), through coord-check, search and transfer:
configs/vit.yaml (examples/vit.py on examples/images.py's gratings), an MLP-Mixer, Hugging Face's ViT."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mutune import checks, config, data, flops, models

from .conftest import CONFIGS, ROOT, write_spec

HF = importlib.util.find_spec("transformers") is not None


@pytest.fixture
def examples_importable(monkeypatch):
    """examples.vit / examples.images importable from a test's temporary working directory."""
    monkeypatch.syspath_prepend(str(ROOT))


def classifier(fn: str, width: int = 32, **kwargs) -> dict:
    return {
        "name": "vision",
        "model": {
            "family": "factory",
            "factory": f"tests.model_styles:{fn}",
            "task": "classification",
            "width": width,
            "base_width": 32,
            "factory_kwargs": kwargs,
        },
        "data": {"module": "examples.images:make"},
        "train": {"steps": 6, "batch_size": 16, "warmup_steps": 2, "eval_every": 3, "eval_batches": 2},
        "search": {"n_trials": 2, "space": {"lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}},
    }


def test_vit_config_smoke_end_to_end(run_cli, workdir, examples_importable):
    """configs/vit.yaml --smoke: the coord-check gate passes (the ViT's attention over CLS + 16 patches
    seen and its scale read), the search runs, the target trains with the hyperparameters unchanged."""
    r = run_cli("search", CONFIGS / "vit.yaml", "--smoke")
    assert r.code == 0, r
    run = workdir / "runs" / "vit-smoke"
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "passed"
    s = pd.read_csv(run / "checks" / "gate_coord_check_slopes.csv")
    assert {"blocks.0.attn.logits", "blocks.1.attn.logits", "blocks.0.attn.scale"} <= set(s.layer)
    assert set(s.verdict) == {"pass"}
    target = next(run.glob("target-*"))
    result = yaml.safe_load((target / "result.yaml").read_text())
    assert result["hparams"] == best["hparams"] and math.isfinite(result["final_val_loss"])
    assert result["final_val_loss"] < 3.0  # ln 10 = 2.30 at chance; a few smoke steps
    metrics = pd.read_csv(target / "metrics.csv")
    assert len(metrics.dropna(subset=["train_loss"])) >= 1
    r = run_cli("inspect", CONFIGS / "vit.yaml", "--format", "json")
    assert r.code == 0, r
    params = {p["name"]: p for p in yaml.safe_load(r.out)["parameters"]}
    assert (
        params["embeddings.cls_token"]["role"] == "vector"
        and "cat" in params["embeddings.cls_token"]["role_source"]
    )
    assert params["embeddings.projection.weight"]["role"] == "input"
    assert params["classifier.weight"]["role"] == "readout"


def test_classification_workload_counts_examples(examples_importable):
    spec = config.spec_from_dict(classifier("mlp_mixer"))
    assert data.vocab_size(spec.data) == 10  # the largest label + 1
    cost = flops.cost(spec)
    assert cost.tokens_per_step == 16 and cost.flops_per_token > 0  # an example, measured on meta
    corpus = data.load(spec.data)
    x, y = data.get_batch(corpus.train, 8, 0, np.random.default_rng(0))
    assert x.shape == (8, 3, 16, 16) and y.shape == (8,) and y.dtype == torch.long
    x2, y2 = data.get_batch(corpus.train, 8, 0, np.random.default_rng(0), part=(1, 2))
    assert torch.equal(x2, x[4:]) and torch.equal(y2, y[4:])  # a rank's slice of the same global batch


def test_mlp_mixer_through_coord_check_search_and_transfer(run_cli, workdir, examples_importable):
    spec = write_spec(workdir / "mixer.yaml", {**classifier("mlp_mixer"), "target": {"width": 64}})
    r = run_cli("coord-check", spec, "--seeds", "1")
    assert r.code == 0, r
    records = pd.read_csv(workdir / "runs" / "vision" / "checks" / "coord_check.csv")
    assert {"blocks.0", "blocks.1", "logits", "blocks.0.token_up"} <= set(records.layer)
    r = run_cli("search", spec)
    assert r.code == 0, r
    run = workdir / "runs" / "vision"
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["provenance"]["coord_check"] == "passed"
    result = yaml.safe_load((run / "target-width64" / "result.yaml").read_text())
    assert result["hparams"] == best["hparams"] and math.isfinite(result["final_val_loss"])
    cfg = yaml.safe_load((run / "target-width64" / "config.yaml").read_text())
    assert cfg["model"]["task"] == "classification" and cfg["data"]["module"] == "examples.images:make"


@pytest.mark.skipif(not HF, reason="transformers is not installed")
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hugging_face_vit_passes_and_its_fixed_heads_fail(attn, examples_importable):
    """Hugging Face's ViT (built from a local config), eager or SDPA attention over CLS + 16 patches:
    µP passes with heads of 16 dims; with 2 heads (the head dim grows) its 1/√d_head scale fails, by
    its scale × head dim (+0.5 exactly) where its logits alone stayed within the limit."""
    ok = checks.coord_check(config.spec_from_dict(classifier("hf_vit", attn=attn)), seeds=1, steps=3)
    assert ok.passed, ok.message()
    assert len(set(ok.slopes[ok.slopes.kind == "attn_logits"].layer)) == 2
    bad = checks.coord_check(
        config.spec_from_dict(classifier("hf_vit", attn=attn, heads=2)), seeds=1, steps=3
    )
    assert bad.verdict == "fail"
    scale = bad.slopes[bad.slopes.kind == "attn_scale"]
    assert len(scale) == 2 and np.allclose(scale.slope, 0.5, atol=1e-6) and (scale.status == "fail").all()


@pytest.mark.skipif(not HF, reason="transformers is not installed")
def test_hugging_face_vit_patches_get_alpha_in_once(examples_importable):
    """Where the position table is an input weight too (model.roles says so, as the shape alone did),
    ``vit.embeddings`` holds it and contains the patch projection: both modules were hooked and the
    patches got α_in twice (×4 at α_in = 2). Only the outer one is hooked now: exactly ×2."""
    d = classifier("hf_vit", attn="eager")
    d["model"]["roles"] = {"vit.embeddings.position_embeddings": "embedding"}
    spec = config.spec_from_dict(d, ["hparams.alpha_in=2.0"])
    model, _ = models.create(spec, spec.hparams, 10)
    assert model._mutune_inputs == ("vit.embeddings",)
    emb = model.vit.embeddings
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        hooked = emb(x)
        patches = (
            emb.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        )  # (its own hook dropped: nested)
        plain = torch.cat([emb.cls_token.expand(2, -1, -1), patches], dim=1) + emb.position_embeddings
    torch.testing.assert_close(hooked, 2.0 * plain)


@pytest.mark.parametrize(
    "source, words",
    [
        ("def make():\n    return 3\n", ["returned int", "expected (train, val)"]),
        ("def make():\n    return [(1, 2, 3)], []\n", ["train item 0 is not an (x, y) pair"]),
        ("def make():\n    return [], []\n", ["the train split is empty"]),
        (
            "import torch\ndef make():\n    return [(torch.zeros(2, 3), torch.tensor([0, -1]))], [(torch.zeros(1, 3), 0)]\n",
            ["labels go down to -1"],
        ),
        ("def make():\n    raise RuntimeError('my data is broken')\n", ["RuntimeError", "my data is broken"]),
    ],
    ids=["not-a-pair-of-splits", "not-xy", "empty", "negative-label", "raises"],
)
def test_a_data_module_mistake_is_one_line_naming_data_module(run_cli, workdir, source, words):
    name = f"bad_data_{abs(hash(source))}"  # one module per case: no stale import
    (workdir / f"{name}.py").write_text(source)
    d = classifier("mlp_mixer")
    d["data"]["module"] = f"{name}:make"
    r = run_cli("search", write_spec(workdir / "s.yaml", d), "--no-transfer")
    assert r.code == 2, r
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.module:") and "Traceback" not in r.err, (
        r.err
    )
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize(
    "edit, key",
    [
        ({"model": {"task": "next_token"}}, "data.module"),  # examples for a language model
        ({"data": {"module": None}}, "model.task"),  # a classifier with no examples
        ({"data": {"corpus": "text", "path": "x.txt"}}, "data.module"),
        ({"data": {"module": "not a path"}}, "data.module"),
    ],
)
def test_task_and_data_module_go_together(run_cli, workdir, edit, key):
    d = classifier("mlp_mixer")
    for section, values in edit.items():
        d[section] = {**d[section], **values}
    r = run_cli("search", write_spec(workdir / "s.yaml", d), "--no-transfer")
    assert r.code == 2 and r.err.startswith(f"error: {key}:"), r
