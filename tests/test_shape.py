"""The seams of the redesign (issue 20), each with the bug it closed: one spec whose keys know what they
mean across a transfer, one target derivation, parametrizations and scaling axes as objects,
families and optimizers that own their arguments, a typed run directory."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from mutune import config
from mutune.config import meaning
from mutune.mup import axes, parametrizations, rules
from mutune.mup.shapes import ParamInfo

from .conftest import CONFIGS, ROOT, TINY, write_spec

QUICK = CONFIGS / "quickstart.yaml"

# ---------------------------------------------------------------------------------------------
# One target derivation


def test_inspect_to_depth_works_and_equals_the_transfers_plan(run_cli, workdir):
    """`inspect --to depth=8` was refused as an unknown key while `transfer --to depth=8` worked, and
    `inspect --to model.depth=8` showed no depth scaling where the transfer trains with it."""
    r = run_cli("transfer", QUICK, "--dry-run", "--to", "depth=8", "--save-plan", workdir / "plan.yaml")
    assert r.code == 0, r
    plan = yaml.safe_load((workdir / "plan.yaml").read_text())
    assert plan["multipliers"]["depth_mult"] == 4.0 and plan["multipliers"]["residual_mult"] == 0.25
    for to in ("depth=8", "model.depth=8"):
        r = run_cli("inspect", QUICK, "--to", to, "--format", "json")
        assert r.code == 0, r
        target = json.loads(r.out)["target"]
        assert target["multipliers"]["residual"] == plan["multipliers"]["residual_mult"]
        rows = {p["name"]: p["target"] for p in json.loads(r.out)["parameters"]}
        # a block's hidden matrix: LR × m_L^(α-1) = 1 at α = 1, ε × 1/m_L (CompleteP)
        assert rows["h.0.attn.c_attn.weight"]["eps_mult"] == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"model.base_width": 128}, "target.overrides.model.base_width"),
        ({"model.parametrization": "sp"}, "target.overrides.model.parametrization"),
        ({"train.optimizer": "sgd"}, "target.overrides.train.optimizer"),
        ({"hparams.lr": 0.1}, "target.overrides.hparams.lr"),
    ],
)
def test_a_target_the_transfer_would_refuse_is_refused_at_load(run_cli, workdir, override, key):
    """Such a target used to be accepted when the spec loaded and refused only when the transfer
    started, after the whole search."""
    spec = write_spec(workdir / "t.yaml", {**TINY, "target": {"width": 64, "overrides": override}})
    r = run_cli("search", spec)
    assert r.code == 2 and r.err.startswith(f"error: {key}:"), r
    assert not (workdir / "runs").exists()  # no trial ran, nothing was written


def test_a_target_at_its_own_values_and_with_short_keys_loads(workdir):
    spec = config.spec_from_dict({**TINY, "target": {"overrides": {"depth": 2, "model.base_width": 32}}})
    t = config.derive(spec, config.target.own_changes(spec), source="target")
    assert t.spec.model.depth == 2 and t.spec.model.base_depth == 1  # CompleteP, relative to the proxy
    assert t.key() == "depth2-base_width32"


def test_every_key_declares_its_meaning_and_the_derived_lists_hold():
    table = meaning.meanings(config.Spec)
    assert all(m.across and m.effect for m in table.values())
    assert {k for k, m in table.items() if m.across == "axis"} == {a.key for a in axes.AXES.values()}
    study = meaning.keys_where(config.Spec, meaning.STUDY_EFFECTS)
    resume = meaning.keys_where(config.Spec, meaning.RESUME_EFFECTS)
    naming = meaning.keys_where(config.Spec, meaning.NAMING_EFFECTS)
    assert {"model.width", "train.steps", "hparams.lr", "search.space", "search.seed"} <= study
    assert not {"name", "search.n_trials", "search.budget", "target.width", "train.device"} & study
    assert "train.parallel" in resume and "train.device" not in resume and "train.eval_every" in resume
    assert "train.eval_every" not in naming and "train.parallel" not in naming and "train.steps" in naming
    fixed = {k for k, m in table.items() if m.across == "fixed"}
    assert {"model.base_width", "model.parametrization", "model.head_dim", "train.optimizer"} <= fixed
    assert all(table[k].note for k in fixed)  # a refusal always says why


# ---------------------------------------------------------------------------------------------
# Families and optimizers own their arguments


def test_an_mlps_default_space_has_no_alpha_attn(run_cli, workdir):
    spec = config.load_spec(CONFIGS / "mlp.yaml", ["search.space={}"])
    assert "alpha_attn" not in config.spec_from_dict({"model": {"family": "mlp"}}).search.space
    assert "alpha_attn" in config.spec_from_dict({}).search.space  # the gpt's has it
    assert spec.search.space == {}
    r = run_cli(
        "show-config",
        CONFIGS / "mlp.yaml",
        "search.space.alpha_attn.low=0.5",
        "search.space.alpha_attn.high=2",
    )
    assert r.code == 2 and r.err.startswith("error: search.space.alpha_attn:") and "mlp family" in r.err, r


@pytest.mark.parametrize("optimizer, name", [("sgd", "beta2"), ("sgd", "beta1"), ("adamw", "momentum")])
def test_an_optimizer_never_accepts_a_hyperparameter_it_does_not_use(run_cli, workdir, optimizer, name):
    spec = write_spec(workdir / "s.yaml", TINY)
    space = f"search.space.{name}={{type: uniform, low: 0.5, high: 0.9}}"
    r = run_cli("show-config", spec, f"train.optimizer={optimizer}", space)
    assert r.code == 2 and r.err.startswith(f"error: search.space.{name}:") and optimizer in r.err, r
    assert run_cli("show-config", spec, "train.optimizer=muon", space).code == 0  # muon reads all three


def test_a_key_of_another_family_is_refused_by_name(run_cli, workdir):
    r = run_cli("show-config", CONFIGS / "mlp.yaml", "model.head_dim=16")
    assert r.code == 2 and "model.head_dim: not a key of the mlp family (only of gpt, moe)" in r.err, r
    assert type(
        config.spec_from_dict({"model": {"family": "factory", "factory": "a.b:c"}}).model
    ).__name__ == ("FactoryModel")


def test_init_offers_the_registered_families(run_cli, workdir):
    r = run_cli("init", "--help")
    assert "|".join(config.FAMILIES) in r.out
    for family in config.FAMILIES:
        assert run_cli("init", workdir / f"{family}.yaml", "--model", family).code == 0
        spec = config.load_spec(workdir / f"{family}.yaml")
        assert spec.model.family == family and set(spec.search.space) == set(config.default_space(family))


def test_sweep_with_muon_works(run_cli, workdir):
    """`point_spec` set model.base_depth on every sweep point, and the depth check refused a base depth
    with Muon even at m_L = 1: this exited 2."""
    # (train.warmup_steps too: a warmup longer than train.steps is refused, issue 22)
    r = run_cli("sweep", QUICK, "--smoke", "train.optimizer=muon", "train.steps=4", "train.warmup_steps=2")
    assert r.code == 0, r


# ---------------------------------------------------------------------------------------------
# Parametrizations and axes as objects


def test_sp_is_a_table_and_mup_equals_it_at_the_base_width():
    mup, sp = parametrizations.MUP, parametrizations.SP
    info = ParamInfo("w", "hidden", (64, 64), (64, 64), (0, 1), 1.0, 1.0, 64, 64, "linear")
    assert mup.scaling(info, "adam") == sp.scaling(info, "adam") == (1.0, 1.0, 1.0)
    wide = dataclasses.replace(info, shape=(256, 256), fan_in_mult=4.0, fan_out_mult=4.0, fan_in=256)
    assert mup.scaling(wide, "adam") == (0.25, 4.0, 0.25) and sp.scaling(wide, "adam") == (1.0, 1.0, 1.0)
    assert sp.role_rule("sgd", "embedding").init_fan_in == "none"  # SP's row for every optimizer kind
    assert (
        mup.multipliers(256, 64, alpha_out=2.0).output == 0.5
        and sp.multipliers(256, 64, alpha_out=2.0).output == 2.0
    )
    assert (mup.coord_check, sp.coord_check) == ("verify", "control")


def test_nothing_outside_the_parametrizations_compares_their_names():
    hits = []
    for path in (ROOT / "mutune").rglob("*.py"):
        if path.name == "parametrizations.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for name in parametrizations.PARAMETRIZATIONS:
                for quoted in (f'"{name}"', f"'{name}'"):
                    if f"== {quoted}" in code or f"!= {quoted}" in code or f"{quoted} ==" in code:
                        hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []


def test_an_axis_is_an_object_and_its_factors_name_the_exponents():
    assert [a.name for a in axes.AXES.values()] == ["width", "depth", "experts"]
    assert axes.by_key("depth") is axes.DEPTH and axes.by_key("model.width") is axes.WIDTH
    info = ParamInfo(
        "h.0.w",
        "hidden",
        (128, 128),
        (32, 32),
        (0, 1),
        4.0,
        4.0,
        128,
        32,
        "linear",
        along=(("depth", 2.0, 8),),
    )
    s = rules.Scaling.of(fan_in=-1, depth=-1, depth_alpha=1)
    assert s(info, alpha=1.0) == 0.25 and s(info, alpha=0.0) == 0.125
    assert rules.Scaling.of(size_in=-0.5, blocks=-0.5)(info) == pytest.approx(
        (128 * 8) ** -0.5
    )  # sizes, for u-µP
    with pytest.raises(ValueError, match="no scaling axis has the factor"):
        rules.Scaling.of(heads=-1)


def test_a_router_is_its_own_role_not_a_readout():
    import torch

    class Gate(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.wte = torch.nn.Embedding(10, width)
            self.router = torch.nn.Linear(width, 4, bias=False)  # width -> experts, inside the network
            self.head = torch.nn.Linear(width, 10, bias=False)

    from mutune.mup import shapes

    infos = shapes.classify(Gate, 128, 32, readout=["head"], routers=["router"])
    assert infos["router.weight"].role == "router" and infos["head.weight"].role == "readout"
    r = parametrizations.MUP.rule(infos["router.weight"], "adam", 0.05, 32)
    assert r.std == pytest.approx(0.05) and r.lr_mult == 1.0  # a readout's init and LR...
    assert parametrizations.MUP.multipliers(128, 32).router == 0.25  # ...and its output × 1/m
    with pytest.raises(shapes.ShapeError, match="not among the named readouts"):  # not a router: refused
        shapes.classify(Gate, 128, 32, readout=["head"])


# ---------------------------------------------------------------------------------------------
# The typed run directory


def test_the_run_dir_reads_back_as_typed_objects(run_cli, workdir, tiny_spec):
    r = run_cli("search", tiny_spec, "--no-transfer", "search.n_trials=2", "--skip-check")
    assert r.code == 0, r
    spec, best = config.RunDir(workdir / "runs" / "tiny").load()
    assert isinstance(best.hparams, config.HParams) and best.provenance["n_trials_finished"] == 2
    # config.yaml is the spec as the trials ran it: with the thread count they used (the suite's one)
    assert spec == config.load_spec(tiny_spec, ["search.n_trials=2", "train.threads=1"])
    bad = workdir / "runs" / "tiny" / "best.yaml"
    bad.write_text("hparams: [1, 2]\n")
    with pytest.raises(config.SpecError, match="no 'hparams' mapping"):
        config.RunDir(workdir / "runs" / "tiny").load()


def test_the_muon_fidelity_bench_runs_as_documented(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "CI": "true", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "transfer_fidelity.py"), "--quick", "--optimizer", "muon"]
    p = subprocess.run(
        cmd + ["--run-dir", str(tmp_path / "tf")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "µP drift" in p.stdout
