"""Depth transfer (CompleteP): the rule table along depth, the branch multiplier, per-block detection,
the refusals, transfer --to depth, depth sweeps."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import yaml

from mutune import config, models
from mutune.mup import optim, rules
from mutune.mup import parametrizations as pz
from mutune.train import train

from .conftest import CONFIGS, TINY, write_spec

SIGMA, LR, WD, EPS = 0.05, 0.01, 0.1, 1e-8


def spec_at(depth=8, base_depth=2, alpha=1.0, width=128, base=32, **over):
    return config.spec_from_dict(
        {
            **TINY,
            "model": {
                **TINY["model"],
                "width": width,
                "base_width": base,
                "depth": depth,
                "base_depth": base_depth,
                "depth_alpha": alpha,
                "bias": True,
            },
            "hparams": {"lr": LR, "weight_decay": WD, "init_std": SIGMA},
        },
        [f"{k}={v}" for k, v in over.items()],
    )


def groups(spec):
    model, infos = models.create(spec, spec.hparams, 256)
    by_name = {n: g for g in models.param_groups(spec, model, infos, spec.hparams) for n in g["names"]}
    return infos, by_name


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_completep_rules_on_named_parameters(alpha):
    """m = 4 (width 128, base 32), m_L = 4 (depth 8, base 2): CompleteP Table 1 with the ε split of
    its fixed reference code."""
    m, m_L = 4.0, 4.0
    infos, g = groups(spec_at(alpha=alpha))
    hidden_lr = LR / m * m_L ** (alpha - 1)
    expected = {
        # name: (LR, weight decay, ε)
        "h.3.attn.c_attn.weight": (hidden_lr, WD * m, EPS / m * m_L**-alpha),
        "h.7.mlp.c_proj.weight": (hidden_lr, WD * m, EPS / m * m_L**-alpha),  # m_in = 4·128 / 4·32
        "h.0.ln_1.weight": (LR * m_L ** (alpha - 1), 0.0, EPS / m * m_L**-alpha),
        "h.5.mlp.c_fc.bias": (LR * m_L ** (alpha - 1), 0.0, EPS / m * m_L**-alpha),
        "ln_f.weight": (LR, 0.0, EPS / m),  # outside the blocks: no depth factor
        "wte.weight": (LR, WD, EPS / m),
        "wpe.weight": (LR, WD, EPS / m),
        "lm_head.weight": (LR, WD, EPS / m),
    }
    for name, (lr, wd, eps) in expected.items():
        assert g[name]["lr"] == pytest.approx(lr), name
        assert g[name]["weight_decay"] == pytest.approx(wd), name
        assert g[name]["eps"] == pytest.approx(eps), name
    blocks = {n for n, i in infos.items() if i.mult("depth") != 1.0}
    assert blocks == {n for n in infos if n.startswith("h.")}
    assert all(i.mult("depth") == m_L for n, i in infos.items() if n in blocks)


def test_the_branch_multiplier_is_m_L_to_the_minus_alpha():
    for alpha, mult in ((1.0, 0.25), (0.5, 0.5), (0.0, 1.0)):
        model, _ = models.create(spec_at(alpha=alpha), config.HParams(), 256)
        assert all(b.residual_mult == mult for b in model.h)
    model, _ = models.create(spec_at(depth=2), config.HParams(), 256)  # at the base depth: off
    assert all(b.residual_mult == 1.0 for b in model.h)


def test_depth_alpha_zero_switches_depth_scaling_off():
    infos, g = groups(spec_at(alpha=0.0))
    assert all(i.mult("depth") == 1.0 for i in infos.values())
    assert g["h.3.attn.c_attn.weight"]["lr"] == pytest.approx(LR / 4)  # width rule only


def test_at_the_base_depth_the_model_is_bit_identical_to_no_depth_scaling():
    plain = spec_at(depth=2, base_depth=None, width=64, **{"train.steps": 6, "train.eval_every": 3})
    based = spec_at(depth=2, base_depth=2, width=64, **{"train.steps": 6, "train.eval_every": 3})
    a, b = train(plain, plain.hparams), train(based, based.hparams)
    assert [r["val_loss"] for r in a.curve] == [r["val_loss"] for r in b.curve]


def test_a_depth_change_without_scaling_differs_from_completep():
    """The negative control is really a different model: CompleteP's depth-8 run is not α = 0's."""
    short = {"train.steps": 6, "train.eval_every": 3}
    cp, off = spec_at(alpha=1.0, width=64, **short), spec_at(alpha=0.0, width=64, **short)
    assert train(cp, cp.hparams).final_val_loss != train(off, off.hparams).final_val_loss


@pytest.mark.parametrize(
    "over, key, words",
    [
        ({"model.base_depth": 0}, "model.base_depth", "must be in [1,"),
        ({"model.depth_alpha": 1.5}, "model.depth_alpha", "[0, 1]"),
        ({"model.depth_alpha": -0.1}, "model.depth_alpha", "[0, 1]"),
        ({"model.base_depth": 2, "train.optimizer": "sgd"}, "model.base_depth", "has none"),
        ({"model.base_depth": 2, "train.optimizer": "muon"}, "model.base_depth", "has none"),
    ],
)
def test_bad_depth_input_is_one_line_naming_the_key(run_cli, workdir, over, key, words):
    spec = write_spec(workdir / "d.yaml", TINY)
    r = run_cli("show-config", spec, *[f"{k}={v}" for k, v in over.items()])
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    assert r.err.startswith(f"error: {key}:") and words in r.err and "Traceback" not in r.err


def test_depth_scaling_without_a_rule_is_refused_in_the_core_too():
    info = next(i for i in groups(spec_at())[0].values() if i.role == "hidden")
    for kind in ("sgd", "muon"):
        with pytest.raises(ValueError, match="no published depth rule"):
            pz.get("mup").scaling(info, kind)
    # the registry's flag and the rule table agree
    for name, entry in optim.OPTIMIZERS.items():
        kinds = {entry.kind(role, 2) for role in rules.ROLES}
        assert entry.depth_rule == (kinds <= set(pz.DEPTH_KINDS)), name


def test_a_family_without_residual_branches_is_refused(run_cli, workdir):
    r = run_cli("show-config", CONFIGS / "mlp.yaml", "model.base_depth=2")
    assert r.code == 2 and r.err.startswith("error: model.base_depth:") and "residual" in r.err


def test_transfer_to_depth_applies_completep_without_the_approximate_warning(run_cli, workdir):
    quick = CONFIGS / "quickstart.yaml"
    assert run_cli("search", quick, "--smoke", "--no-transfer").code == 0
    run = workdir / "runs" / "quickstart-smoke"
    r = run_cli("transfer", run, "--to", "depth=8", "--smoke")
    assert r.code == 0, r
    assert "does not µTransfer exactly" not in r.err
    target = run / "target-depth8"
    plan = yaml.safe_load((target / "plan.yaml").read_text())
    assert plan["warnings"] == []
    mult = plan["multipliers"]
    assert (mult["base_depth"], mult["depth_mult"], mult["residual_mult"]) == (2, 4.0, 0.25)
    cfg = yaml.safe_load((target / "config.yaml").read_text())["model"]
    assert (cfg["depth"], cfg["base_depth"]) == (8, 2)
    assert yaml.safe_load((target / "result.yaml").read_text())["final_val_loss"] > 0
    best = yaml.safe_load((run / "best.yaml").read_text())["provenance"]
    assert (best["base_depth"], best["depth_alpha"]) == (2, 1.0)


def test_transfer_to_depth_without_scaling_warns(run_cli, workdir):
    quick = CONFIGS / "quickstart.yaml"
    assert run_cli("search", quick, "--smoke", "--no-transfer", "model.depth_alpha=0").code == 0
    run = workdir / "runs" / "quickstart-smoke"
    r = run_cli("transfer", run, "--to", "depth=4", "--smoke", "--dry-run")
    assert r.code == 0, r
    assert "does not µTransfer exactly" in r.err and "depth_alpha is 0" in r.err
    for key, value in (("model.base_depth", 4), ("model.depth_alpha", 0.5)):
        r = run_cli("transfer", run, "--to", f"{key}={value}", "--smoke", "--dry-run")
        assert r.code == 2 and f"--to {key}" in r.err


def test_provenance_guard_covers_the_depth_parametrization(run_cli, workdir):
    quick = CONFIGS / "quickstart.yaml"
    assert run_cli("search", quick, "--smoke", "--no-transfer").code == 0
    run = workdir / "runs" / "quickstart-smoke"
    best = yaml.safe_load((run / "best.yaml").read_text())
    best["provenance"]["depth_alpha"] = 0.5
    (run / "best.yaml").write_text(yaml.safe_dump(best))
    r = run_cli("transfer", run, "--to", "depth=4", "--smoke", "--dry-run")
    assert r.code == 2 and "depth_alpha" in r.err


def test_a_factory_must_take_depth_to_scale_it(run_cli, workdir):
    factory = CONFIGS / "factory.yaml"
    assert run_cli("search", factory, "--smoke", "--no-transfer").code == 0
    r = run_cli("transfer", workdir / "runs" / "factory-smoke", "--to", "depth=4", "--smoke")
    assert r.code == 0, r
    target = workdir / "runs" / "factory-smoke" / "target-depth4"
    assert yaml.safe_load((target / "plan.yaml").read_text())["multipliers"]["residual_mult"] == 0.5
    # the same model, without depth= / residual_mult= in its signature
    r = run_cli(
        "search",
        factory,
        "--smoke",
        "--no-transfer",
        "model.factory=tests.factory_models:no_depth",
        "model.base_depth=2",
    )
    assert r.code == 2 and r.err.startswith("error: model.factory:") and "residual_mult" in r.err


def test_per_block_detection_refuses_a_model_that_ignores_depth():
    from mutune.mup import shapes

    with pytest.raises(shapes.ShapeError, match="ignores its depth"):
        shapes.per_block(lambda d: torch.nn.Linear(4, 4), 2)


def test_depth_sweep_reports_the_optimum_across_depth(run_cli, workdir):
    r = run_cli("sweep", CONFIGS / "quickstart.yaml", "--smoke", "--depths", "2,4")
    assert r.code == 0, r
    checks = workdir / "runs" / "quickstart-smoke" / "checks"
    runs = pd.read_csv(checks / "sweep-lr-runs.csv")
    assert sorted(set(runs.depth)) == [2, 4] and set(runs.width) == {32}
    summary = pd.read_csv(checks / "sweep-lr-depth-summary.csv")
    assert list(summary.depth) == [2, 4] and "shift_from_shallowest" in summary.columns
    report = yaml.safe_load((checks / "sweep-lr.yaml").read_text())
    assert report["size_axis"] == "depth" and report["drift"]["mup"]["axis"] == "depth"
    assert (checks / "sweep-lr-depth.png").is_file()
    d = report["drift"]["mup"]
    s = summary.set_index("depth")
    assert d["drift"] == pytest.approx(s.refined_x[4] - s.refined_x[2])
    assert math.isfinite(d["drift"])


# ---------------------------------------------------------------------------------------------
# The coord check across depth


def test_blocks_are_compared_at_the_same_relative_depth():
    from mutune.checks import depth_relative

    assert depth_relative("h.1.attn.c_proj", 4) == "h.half.attn.c_proj"
    assert depth_relative("h.3.attn.c_proj", 8) == "h.half.attn.c_proj"
    assert depth_relative("h.7", 8) == "h.last"
    assert depth_relative("h.0.mlp.0", 2) == "h.half.mlp.0"  # only the block's own index is renamed
    assert depth_relative("h.2", 8) is None  # exists at some depths only
    assert depth_relative("ln_f", 8) == "ln_f"


def _depth_slopes(workdir) -> pd.DataFrame:
    return pd.read_csv(workdir / "runs" / "quickstart-smoke" / "checks" / "coord_check_depth_slopes.csv")


def test_coord_check_across_depth_passes_with_completep(run_cli, workdir):
    r = run_cli("coord-check", CONFIGS / "quickstart.yaml", "--smoke", "--depths", "2,4,8")
    assert r.code == 0, r
    s = _depth_slopes(workdir)
    assert set(s.verdict) == {"pass"} and not (s.status == "fail").any()
    records = pd.read_csv(workdir / "runs" / "quickstart-smoke" / "checks" / "coord_check_depth.csv")
    assert sorted(records.depth.unique()) == [2, 4, 8] and records.width.nunique() == 1
    # the residual stream half way and at the end, and the modules inside those blocks, are checked
    assert {"h.half", "h.last", "h.half.mlp.c_proj"} <= set(s.layer)


def test_coord_check_across_depth_fails_without_depth_scaling(run_cli, workdir):
    """The deliberate violation: no residual multiplier, so the residual stream grows with depth."""
    r = run_cli(
        "coord-check", CONFIGS / "quickstart.yaml", "--smoke", "--depths", "2,4,8", "model.depth_alpha=0"
    )
    assert r.code == 1, r
    s = _depth_slopes(workdir)
    assert set(s.verdict) == {"fail"}
    blocks = s[(s.kind == "block") & (s.t >= 2)]
    assert (blocks.status == "fail").all() and (blocks.slope > 0.3).all()  # growing, not noise


@pytest.mark.parametrize(
    "args, words",
    [
        (["--depths", "3,4"], "even depths"),
        (["--depths", "4"], "at least two"),
        (["--depths", "2,4", "train.optimizer=sgd"], "adamw only"),
    ],
)
def test_bad_depth_check_input_is_one_line(run_cli, workdir, args, words):
    r = run_cli("coord-check", CONFIGS / "quickstart.yaml", "--smoke", *args)
    assert r.code == 2 and r.err.startswith("error: --depths:") and words in r.err, r
    assert len(r.err.strip().splitlines()) == 1
