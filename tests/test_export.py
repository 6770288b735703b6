"""``mutune export``: the transferred recipe in mutune's schema and in torchtitan's, NeMo's and Hugging
Face's own config syntax, each checked by the real library where it installs (skipped, saying why,
where it does not): the param groups the framework builds from the export give every parameter the
LR, weight decay and ε mutune's trainer gives it, and a Granite model built from the exported
config.json computes the logits of mutune's model in float64."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
import torch
import yaml

from mutune import config, export, models
from mutune.config import RunDir

from .conftest import ROOT, TINY, write_spec

# hyperparameters far from 1, so a multiplier applied the wrong way round shows
HP = {
    "lr": 0.02,
    "init_std": 0.03,
    "alpha_in": 2.5,
    "alpha_out": 0.3,
    "alpha_attn": 1.7,
    "weight_decay": 0.1,
    "beta1": 0.8,
    "beta2": 0.97,
}


def make_run(path, spec_data: dict, hp: dict = HP, laws: dict | None = None) -> RunDir:
    """A search run directory as `mutune search` leaves it: config.yaml (the resolved spec) and
    best.yaml (the winner and its provenance)."""
    spec = config.spec_from_dict(spec_data)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    best = {
        "hparams": {**config.HParams().__dict__, **hp},
        "provenance": {"trial_number": 0, "search_flops": 1.0},
    }
    if laws:
        best["laws"] = laws
    (path / "best.yaml").write_text(yaml.safe_dump(best))
    return RunDir(path)


def trained_with(r: export.Recipe) -> tuple[torch.nn.Module, dict[str, dict]]:
    """mutune's own target model (built and initialised as `mutune transfer` would) and, per parameter
    name, the LR, weight decay and ε of the trainer's own param group for it."""
    spec, hp = r.spec, r.plan.hparams
    model, infos = models.create(spec, hp, r.vocab_size)
    per_param = {}
    for g in models.param_groups(spec, model, infos, hp):
        for n in g["names"]:
            per_param[n] = {"lr": g["lr"], "weight_decay": g["weight_decay"], "eps": g.get("eps")}
    return model, per_param


@pytest.fixture
def gpt_run(workdir):
    """A gpt µP run: width 32 proxy, base 32, depth 1."""
    return make_run(workdir / "runs" / "gpt", {**TINY, "name": "gpt"})


# ---------------------------------------------------------------------------------------------
# mutune's own schema


def test_yaml_holds_the_mup_rules_of_the_target(gpt_run):
    """Width x4 and depth x2 (CompleteP): every number worked out by hand from µP's table."""
    r = export.recipe(gpt_run, ["width=128", "depth=2"])
    doc = yaml.safe_load(export.render(r, "yaml"))
    m, m_l, lr, eps, wd, sigma = 4.0, 2.0, HP["lr"], 1e-8, HP["weight_decay"], HP["init_std"]
    by_name = {n: g for g in doc["param_groups"] for n in g["names"]}
    assert set(by_name) == {n for n, _ in models.build(r.spec, r.plan.hparams, 256).named_parameters()}
    hidden, proj = by_name["h.1.attn.c_proj.weight"], by_name["h.0.mlp.c_proj.weight"]
    assert hidden["lr"] == pytest.approx(lr / m)  # η/m · m_L^(α-1), α = 1
    assert hidden["weight_decay"] == pytest.approx(wd * m)  # λ·m: LR·λ constant in width
    assert hidden["eps"] == pytest.approx(eps / (m * m_l))  # ε/(m·m_L^α) inside a block
    assert hidden["init_std"] == pytest.approx(sigma * math.sqrt(32 / 128))
    assert proj["init_std"] == pytest.approx(sigma * math.sqrt(32 / 512))  # fan-in 4·width
    emb, head = by_name["wte.weight"], by_name["lm_head.weight"]
    assert emb["lr"] == pytest.approx(lr) and emb["eps"] == pytest.approx(eps / m)
    assert emb["init_std"] == pytest.approx(sigma) and head["init_std"] == pytest.approx(sigma)
    assert by_name["h.0.ln_1.weight"]["weight_decay"] == 0 and by_name["h.0.ln_1.weight"]["init"] == "ones"
    f = doc["forward"]
    assert f["input_mult"] == pytest.approx(2.5) and f["output_mult"] == pytest.approx(0.3 / m)
    assert f["residual_mult"] == pytest.approx(1 / m_l)
    assert f["attention_scale"] == pytest.approx(1.7 / math.sqrt(16))  # head dim fixed at 16
    assert doc["optimizer"]["betas"] == [0.8, 0.97] and doc["model"]["width"] == 128


def test_yaml_agrees_with_the_trainer_on_every_parameter(gpt_run):
    r = export.recipe(gpt_run, ["width=96"])
    _, per_param = trained_with(r)
    for g in r.groups:
        for n in g.names:
            assert (g.lr, g.weight_decay, g.eps) == tuple(per_param[n].values()), n


def test_the_laws_are_applied_as_the_plan_applies_them(workdir):
    law = {
        "steps": {
            "exponent": -0.25,
            "interval": [-0.35, -0.15],
            "points": [{"multiple": 0.5}, {"multiple": 1}],
        }
    }
    run = make_run(workdir / "runs" / "law", {**TINY, "name": "law"}, laws=law)
    r = export.recipe(run, ["width=64", "train.steps=64"])
    assert r.plan.hparams.lr == pytest.approx(HP["lr"] * 8**-0.25)
    doc = yaml.safe_load(export.render(r, "yaml"))
    assert doc["hparams"]["lr"] == pytest.approx(HP["lr"] * 8**-0.25)
    assert doc["transferred_hparams"]["lr"] == HP["lr"] and doc["laws_applied"]
    assert doc["param_groups"][0]["lr"] == pytest.approx(
        doc["hparams"]["lr"] * doc["param_groups"][0]["lr_mult"]
    )
    plain = export.recipe(run, ["width=64", "train.steps=64"], no_laws=True)
    assert plain.plan.hparams.lr == HP["lr"]


# ---------------------------------------------------------------------------------------------
# The patterns


def test_every_parameter_is_matched_by_exactly_one_pattern(gpt_run):
    r = export.recipe(gpt_run, ["width=128", "depth=3"])
    names = [n for n, _ in models.build(r.spec, r.plan.hparams, 256).named_parameters()]
    assert len(names) == 2 + 3 * 6 + 2
    patterns = [g.pattern for g in r.groups]
    for n in names:
        assert sum(bool(re.search(p, n)) for p in patterns) == 1, n
        # a framework's wrapper prefix (FSDP, activation checkpointing, torch.compile) still matches once
        wrapped = f"_orig_mod.{n}"
        assert sum(bool(re.search(p, wrapped)) for p in patterns) == 1, wrapped
        # checkpoint_wrapper renames a block's parameters after the block index
        ckpt = re.sub(r"^h\.(\d+)\.", r"h.\1._checkpoint_wrapped_module.", n)
        assert sum(bool(re.search(p, ckpt)) for p in patterns) == 1, ckpt
    assert sum(n.startswith("h.") for n in names) == 3 * 6  # (the blocks' names the rename above exercised)
    # the check itself fails on a pattern that misses a parameter, or two that overlap
    with pytest.raises(RuntimeError, match="matched by 0"):
        export.check_patterns(names, patterns[1:])
    with pytest.raises(RuntimeError, match="matched by 2"):
        export.check_patterns(names, [*patterns, r"\.weight$"])


def test_block_indices_are_generalised_only_where_every_block_agrees():
    names = ["h.0.w", "h.1.w", "h.10.w", "h.0.b", "h.1.b"]
    pats = export._patterns(names, [["h.0.w", "h.1.w", "h.10.w"], ["h.0.b"], ["h.1.b"]])
    w = export.WRAPPED
    assert sorted(pats.values()) == sorted(
        [rf"(?:^|\.)h\.\d+\.{w}w$", rf"(?:^|\.)h\.0\.{w}b$", rf"(?:^|\.)h\.1\.{w}b$"]
    )


# ---------------------------------------------------------------------------------------------
# torchtitan


def _load_module(path):
    spec = importlib.util.spec_from_file_location("mutune_titan_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torchtitan_builds_mutunes_param_groups(gpt_run, tmp_path):
    pytest.importorskip(
        "torchtitan.components.optimizer",
        reason="torchtitan is not installed (.ci/run installs torchtitan 0.3.0 --no-deps, with tyro and spmd_types)",
    )
    r = export.recipe(gpt_run, ["width=128", "depth=2"])
    path = tmp_path / "mup_optimizer.py"
    path.write_text(export.render(r, "torchtitan"))
    module = _load_module(path)
    from torchtitan.components.optimizer import OptimizersContainer

    cfg = module.optimizer()
    assert isinstance(cfg, OptimizersContainer.Config)
    model, per_param = trained_with(r)
    container = OptimizersContainer(cfg, model_parts=[model])  # torchtitan's own grouping (first match wins)
    got = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for opt in container.optimizers:
        assert isinstance(opt, torch.optim.AdamW)
        for g in opt.param_groups:
            for p in g["params"]:
                got[names[id(p)]] = {"lr": g["lr"], "weight_decay": g["weight_decay"], "eps": g["eps"]}
                assert g["betas"] == (0.8, 0.97)
    assert got == per_param


# ---------------------------------------------------------------------------------------------
# NeMo Automodel


def test_nemo_builds_mutunes_param_groups(gpt_run, tmp_path):
    pytest.importorskip(
        "nemo_automodel.recipes._typed_config",
        reason="nemo-automodel is not installed (.ci/run installs nemo-automodel 0.7.0 --no-deps: its "
        "dependencies pull CUDA kernels and another transformers)",
    )
    from nemo_automodel.components.config.loader import load_yaml_config
    from nemo_automodel.components.optim.scheduler import OptimizerParamScheduler
    from nemo_automodel.recipes._typed_config import RecipeConfig

    r = export.recipe(gpt_run, ["width=128"])
    path = tmp_path / "nemo.yaml"
    path.write_text(export.render(r, "nemo"))
    model, per_param = trained_with(r)
    (opt,) = RecipeConfig(load_yaml_config(path)).optimizer.build(model)  # NeMo's own YAML and grouping
    hp = r.plan.hparams
    OptimizerParamScheduler(  # the scheduler applies lr_mult / wd_mult; at the peak the LR is η
        opt, hp.lr, hp.lr, hp.lr, 0, 10, "constant", hp.weight_decay, hp.weight_decay, 10, "constant"
    )
    names = {id(p): n for n, p in model.named_parameters()}
    got = {
        names[id(p)]: {"lr": g["lr"], "weight_decay": g["weight_decay"], "eps": g["eps"]}
        for g in opt.param_groups
        for p in g["params"]
    }
    assert got.keys() == per_param.keys()
    for n, want in per_param.items():
        assert got[n] == pytest.approx(want, rel=1e-12), n


# ---------------------------------------------------------------------------------------------
# Hugging Face (Granite)

GRANITE = {
    "name": "granite",
    "model": {
        "family": "factory",
        "factory": "examples.granite:build",
        "factory_kwargs": {"head_dim": 16, "layers": 2},
        "width": 32,
        "base_width": 32,
        "seq_len": 16,
    },
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "eval_every": 3, "eval_batches": 1},
    "search": {"n_trials": 2},
}


@pytest.fixture
def granite_run(workdir, monkeypatch):
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[hf]')")
    monkeypatch.chdir(ROOT)  # examples.granite is imported from the repository root
    return make_run(workdir / "runs" / "granite", GRANITE)


def test_a_granite_model_built_from_the_hf_export_computes_mutunes_logits(granite_run, workdir):
    """mutune's model of the target (the Granite factory at width 64, µP by its hooks: α_in on the
    embedding output, α_out/m on the readout's input) and transformers' Granite built from the
    exported config.json, with the same weights, agree in float64."""
    from transformers import GraniteConfig, GraniteForCausalLM

    r = export.recipe(granite_run, ["width=64"])
    text = export.render(r, "hf")
    (workdir / "config.json").write_text(text)
    hf_config = GraniteConfig.from_json_file(workdir / "config.json")
    assert hf_config.embedding_multiplier == pytest.approx(2.5)
    assert hf_config.logits_scaling == pytest.approx(2.0 / 0.3)  # 1 / (α_out/m), m = 2
    assert hf_config.hidden_size == 64 and hf_config.num_attention_heads == 4
    mine, _ = models.create(r.spec, r.plan.hparams, r.vocab_size)
    hf_config._attn_implementation = "eager"
    theirs = GraniteForCausalLM(hf_config)
    theirs.load_state_dict(mine.state_dict())
    mine.double().eval(), theirs.double().eval()
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _ = mine(idx)
        got = theirs(idx).logits
        factory_config = GraniteForCausalLM(
            type(hf_config)(**{**hf_config.to_dict(), "embedding_multiplier": 1.0, "logits_scaling": 1.0})
        )
        factory_config.load_state_dict(mine.state_dict())
        unscaled = factory_config.double().eval()(idx).logits
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (got - want).abs().max()
    assert (unscaled - want).abs().max() > 1e-3  # the multipliers matter: without them it differs
    groups = json.loads(text)["mutune"]["param_groups"]
    assert {g["pattern"] for g in groups} == {g.pattern for g in r.groups}


# ---------------------------------------------------------------------------------------------
# The command, and what each format refuses


def test_export_command_on_a_searched_run(run_cli, tiny_spec, workdir):
    r = run_cli("search", tiny_spec, "search.n_trials=1", "--no-transfer", "--skip-check")
    assert r.code == 0, r
    r = run_cli("export", "runs/tiny", "--to", "width=64", "--format", "yaml")
    assert r.code == 0, r
    doc = yaml.safe_load(r.out)
    best = yaml.safe_load((workdir / "runs/tiny/best.yaml").read_text())
    assert doc["hparams"]["lr"] == best["hparams"]["lr"] and doc["model"]["width"] == 64
    r = run_cli("export", "runs/tiny", "--to", "width=64", "--format", "torchtitan", "-o", "opt.py")
    assert r.code == 0 and "ParamGroupConfig(" in (workdir / "opt.py").read_text(), r
    compile((workdir / "opt.py").read_text(), "opt.py", "exec")  # valid Python


@pytest.mark.parametrize(
    "args, key",
    [
        (["--to", "width=64", "--format", "nemo", "--to", "depth=2"], "error: train.eps:"),
        (["--to", "width=64", "--format", "hf"], "error: model.family: gpt:"),
        (["--to", "width=64", "--format", "onnx"], "error: --format:"),
        (["--to", "width=64", "--format", "yaml", "-o", "nowhere/x.yaml"], "error: --out:"),
        (["--to", "width=64", "--to", "hparams.lr=0.1"], "error: --to hparams.lr:"),
    ],
)
def test_what_a_format_cannot_express_is_refused_in_one_line(run_cli, gpt_run, args, key):
    r = run_cli("export", gpt_run.path, *args)
    assert r.code == 2 and r.err.startswith(key) and len(r.err.strip().splitlines()) == 1, r


@pytest.mark.parametrize(
    "spec_changes, fmt, key",
    [
        ({"train": {**TINY["train"], "optimizer": "sgd"}}, "torchtitan", "train.optimizer"),
        ({"train": {**TINY["train"], "optimizer": "muon"}}, "nemo", "train.optimizer"),
        ({"model": {**TINY["model"], "parametrization": "umup"}}, "torchtitan", "model.parametrization"),
        ({"model": {**TINY["model"], "parametrization": "umup"}}, "hf", "model.parametrization"),
    ],
)
def test_refusals_name_the_key(run_cli, workdir, spec_changes, fmt, key):
    run = make_run(workdir / "runs" / "x", {**TINY, **spec_changes})
    r = run_cli("export", run.path, "--to", "width=64", "--format", fmt)
    assert r.code == 2 and r.err.startswith(f"error: {key}:") and len(r.err.strip().splitlines()) == 1, r
    assert run_cli("export", run.path, "--to", "width=64", "--format", "yaml").code == 0


def test_a_factory_model_that_is_not_granite_is_refused_for_hf(run_cli, workdir, monkeypatch):
    monkeypatch.chdir(ROOT)
    data = {
        **GRANITE,
        "model": {
            **GRANITE["model"],
            "factory": "examples.my_model:build",
            "factory_kwargs": {"depth": 2, "head_dim": 16},
            "readout": ["unembed"],
        },
    }
    run = make_run(workdir / "runs" / "mine", data, hp={"lr": 0.01})
    r = run_cli("export", run.path, "--to", "width=64", "--format", "hf")
    assert r.code == 2 and r.err.startswith("error: model.factory:") and "Granite" in r.err, r


def test_export_does_not_write_a_spec_file_run(run_cli, workdir):
    spec = write_spec(workdir / "s.yaml", TINY)
    r = run_cli("export", spec, "--to", "width=64")
    assert r.code == 2 and "search it first" in r.err, r


@pytest.mark.parametrize(
    "args",
    [
        ["export", "--help"],
        ["data", "prepare", "--help"],
        ["export", "runs/x", "--format", "onnx"],
        ["data", "prepare", "no-such-dir", "--tokenizer", "bpe", "--vocab-size", "300", "--out", "o"],
        ["search", str(ROOT / "configs" / "quickstart.yaml"), "--launcher", "slurm", "--slurm", "partition"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_the_new_commands_answer_help_and_argument_errors_without_torch(args, workdir):
    from .test_cli_output import _probe

    r = _probe(args, workdir)
    assert r["heavy"] == [], f"mutune {' '.join(args)} imported {r['heavy']}"
