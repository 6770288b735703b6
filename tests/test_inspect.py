"""`mutune inspect`: the per-parameter table agrees with what the optimizer actually holds."""

from __future__ import annotations

import json

import pytest
import torch

from mutune import config
from mutune.train import build as build_run
from mutune.train.parallel import Distributed

from .conftest import CONFIGS, write_spec
from .test_checks import factory_spec


def _optimizer_values(spec: config.Spec) -> tuple[dict, dict]:
    """{name: (peak lr, weight_decay, eps)} from the trainer's own optimizer (the LR before the
    schedule's factor: LambdaLR keeps it as initial_lr), and the initialised weights."""
    run = build_run(spec, spec.hparams, Distributed(), torch.device("cpu"))
    values = {}
    for g in run.opt.param_groups:
        for name in g["names"]:
            values[name] = (g["initial_lr"], g["weight_decay"], g.get("eps"))
    return values, dict(run.model.named_parameters())


def test_json_agrees_with_the_optimizer_param_groups_at_proxy_and_target(run_cli, workdir):
    r = run_cli("inspect", CONFIGS / "quickstart.yaml", "--to", "width=512", "--format", "json")
    assert r.code == 0, r
    res = json.loads(r.out)
    assert res["proxy"]["width"] == 64 and res["target"]["width"] == 512
    assert res["target"]["multipliers"]["output"] == pytest.approx(1 / 8)  # α_out / m, m = 512 / 64
    proxy = config.load_spec(CONFIGS / "quickstart.yaml")
    target = config.load_spec(CONFIGS / "quickstart.yaml", ["model.width=512"])
    for side, spec in (("proxy", proxy), ("target", target)):
        held, weights = _optimizer_values(spec)
        assert {p["name"] for p in res["parameters"]} == set(held)
        for p in res["parameters"]:
            row = p[side]
            assert (row["lr"], row["weight_decay"], row["eps"]) == held[p["name"]], p["name"]
            assert row["shape"] == list(weights[p["name"]].shape)
            if row["init"] == "normal" and weights[p["name"]].numel() > 10_000:
                assert weights[p["name"]].std().item() == pytest.approx(row["init_std"], rel=0.03), p["name"]
    hidden = next(p for p in res["parameters"] if p["name"] == "h.0.attn.c_attn.weight")
    assert hidden["role"] == "hidden" and hidden["width_dims"] == [0, 1]
    assert hidden["target"]["lr_mult"] == pytest.approx(1 / 8) and hidden["proxy"]["lr_mult"] == 1
    r = run_cli("inspect", CONFIGS / "quickstart.yaml", "--to", "width=512")  # the table
    assert r.code == 0, r


def test_a_factory_model_shows_its_hooks_and_warnings(run_cli, workdir):
    spec = write_spec(workdir / "bmm.yaml", factory_spec("bmm_fixed_heads"))
    r = run_cli("inspect", spec, "--format", "json")
    assert r.code == 0, r
    res = json.loads(r.out)
    assert res["target"] is None
    mult = res["proxy"]["multipliers"]
    assert mult["readout_modules"] == ["head"] and mult["input_modules"] == ["tok"]
    roles = {p["name"]: p["role"] for p in res["parameters"]}
    assert roles["pos"] == "embedding" and roles["head.weight"] == "readout"
    warnings = "\n".join(res["warnings"])
    assert "α_in does not reach 'pos'" in warnings and "attention 'blocks.0.attn'" in warnings


@pytest.mark.parametrize(
    "args, key",
    [
        (["--format", "yaml"], "--format"),
        (["--to", "width=0"], "--to model.width"),
        (["model.widht=3"], "model.widht"),
    ],
)
def test_user_errors_exit_2(run_cli, workdir, args, key):
    r = run_cli("inspect", CONFIGS / "quickstart.yaml", *args)
    assert r.code == 2 and key in r.err, r
