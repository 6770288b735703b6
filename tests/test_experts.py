"""The experts axis: a mixture's expert count as a scaling axis (m_E = n_experts / base_experts at a
fixed top_k). Detection by unit, the rule rows at m_E > 1 (Adam ε/m_E; no LR factor for AdamW and
Muon), the refusals (SGD, a family without experts), ``transfer``/``inspect --to experts=N``, and the
coord check across the expert count passing with the rules and failing on deliberate violations."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
import torch
import yaml

from mutune import checks, config, models
from mutune.mup import axes, rules, shapes
from mutune.mup import parametrizations as pz

from .conftest import CONFIGS, write_spec
from .test_moe import MOE, moe_spec
from .violations import registered

LR, WD, EPS = 0.01, 0.1, 1e-8
MOE_YAML = CONFIGS / "moe.yaml"


def groups(spec):
    model, infos = models.create(spec, spec.hparams, 256)
    by_name = {n: g for g in models.param_groups(spec, model, infos, spec.hparams) for n in g["names"]}
    return infos, by_name


def test_the_experts_axis_is_an_object_with_its_factor():
    assert axes.by_key("experts") is axes.EXPERTS and axes.EXPERTS.key == "model.n_experts"
    assert "experts" in axes.FACTORS and axes.EXPERTS.found_by == "units"
    assert rules.Scaling.of(experts=-1).exponent("experts") == -1.0


def test_experts_and_routers_are_found_by_unit_and_nothing_else():
    spec = moe_spec(n_experts=16, base_experts=4, depth=2, bias=True)
    infos, _ = groups(spec)
    along = {n for n, i in infos.items() if i.mult("experts") != 1.0}
    assert along == {n for n in infos if ".mlp." in n}  # every expert's weights and biases, the routers
    assert {i.mult("experts") for n, i in infos.items() if n in along} == {4.0}
    assert "h.0.mlp.router.weight" in along and "h.1.mlp.experts.15.c_proj.bias" in along


def test_a_unit_index_equal_to_a_block_index_is_told_apart():
    """At 4 experts and 6 blocks, h.4.mlp.experts.4 is expert 4 of block 4: the blocks are not experts."""
    spec = moe_spec(depth=6, n_experts=4)
    impl = models.family(spec)
    build = lambda n: impl.bare(spec.edit({"model.n_experts": n}), spec.hparams, 256, 32)  # noqa: E731
    assert shapes.unit_prefixes(build, 4, "n_experts") == {f"h.{i}.mlp.experts" for i in range(6)}
    members = shapes.per_unit(build, 4)
    assert "h.4.attn.c_attn.weight" not in members and "h.4.mlp.experts.3.c_fc.weight" in members


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_rule_rows_at_four_times_the_experts(optimizer):
    """m_E = 4 (16 experts, base 4), m = 4 (width 128, base 32): the LRs do not change with the expert
    count (Adam and Muon normalise the update); Adam's ε is ×1/m_E on the experts and routers only."""
    m, m_E = 4.0, 4.0
    spec = moe_spec(f"train.optimizer={optimizer}", width=128, base_width=32, n_experts=16, base_experts=4)
    _, g = groups(spec)
    _, g1 = groups(spec.edit({"model.base_experts": 16}))  # the same model with the experts rules off
    hidden_lr = LR / m if optimizer == "adamw" else LR / m**0.5
    expert, router, attn = "h.0.mlp.experts.9.c_fc.weight", "h.0.mlp.router.weight", "h.0.attn.c_attn.weight"
    assert g[expert]["lr"] == pytest.approx(hidden_lr) == g1[expert]["lr"]
    assert g[router]["lr"] == LR == g1[router]["lr"]
    assert g[router]["eps"] == pytest.approx(EPS / m / m_E) and g1[router]["eps"] == pytest.approx(EPS / m)
    if optimizer == "adamw":
        assert g[expert]["eps"] == pytest.approx(EPS / m / m_E)
        assert g[expert]["weight_decay"] == pytest.approx(WD * m) == g1[expert]["weight_decay"]
    else:
        assert g[expert]["kind"] == "muon"
    for k in ("lr", "weight_decay", "eps"):  # outside the mixtures nothing depends on the expert count
        assert g[attn].get(k) == g1[attn].get(k)


def test_at_the_base_expert_count_the_rules_change_nothing():
    for base in (None, 4):
        _, g = groups(moe_spec(n_experts=4, base_experts=base))
        assert {g["h.0.mlp.router.weight"]["eps"], g["h.0.mlp.experts.0.c_fc.weight"]["eps"]} == {EPS}


def test_sgd_has_no_experts_rule_and_is_refused(run_cli, workdir):
    spec = write_spec(workdir / "moe.yaml", {**MOE, "train": {**MOE["train"], "optimizer": "sgd"}})
    r = run_cli("show-config", spec, "model.base_experts=2", "model.n_experts=4")
    assert r.code == 2 and r.err.startswith("error: model.base_experts:") and "sgd" in r.err, r
    assert len(r.err.strip().splitlines()) == 1
    # in the core too: the table has no SGD row along the experts
    infos, _ = groups(moe_spec(n_experts=8, base_experts=4))
    with pytest.raises(ValueError, match="no published experts rule"):
        pz.MUP.scaling(infos["h.0.mlp.router.weight"], "sgd")
    # a target with more experts under SGD trains as asked, with a warning why it does not transfer
    r = run_cli("transfer", spec, "--dry-run", "--to", "experts=8")
    assert r.code == 0 and "does not µTransfer exactly" in r.err and "no experts rule" in r.err, r


def test_every_optimizer_either_has_the_rule_or_is_refused():
    computed = config.FAMILIES["moe"].parametrizations  # u-µP needs a unit-scaled forward the family lacks
    for name, entry in pz.PARAMETRIZATIONS.items():
        if name not in computed:
            continue
        for opt in ("adamw", "muon", "sgd"):
            spec = moe_spec(f"train.optimizer={opt}", f"model.parametrization={name}")
            covered = set(config.axes.OPTIMIZERS[opt].kinds) <= set(entry.axis_kinds["experts"])
            assert (config.axes.why_not(spec, "experts") == "") == covered == (opt != "sgd")


@pytest.mark.parametrize(
    "spec, to, key, words",
    [
        ("quickstart.yaml", "experts=8", "--to model.n_experts", "not a key of the gpt family"),
        ("moe.yaml", "model.base_experts=8", "--to model.base_experts", "cannot change"),
        ("moe.yaml", "experts=1", "--to model.top_k", "more than model.n_experts=1"),
    ],
)
def test_bad_experts_targets_are_one_line_naming_the_key(run_cli, workdir, spec, to, key, words):
    r = run_cli("transfer", CONFIGS / spec, "--dry-run", "--to", to)
    assert r.code == 2 and r.err.startswith(f"error: {key}:") and words in r.err, r
    assert len(r.err.strip().splitlines()) == 1


def test_transfer_to_more_experts_is_an_axis_and_equals_inspect(run_cli, workdir):
    plan_path = workdir / "plan.yaml"
    r = run_cli("transfer", MOE_YAML, "--dry-run", "--to", "experts=16", "--save-plan", plan_path)
    assert r.code == 0, r
    assert "does not µTransfer exactly" not in r.err  # an axis, not an approximate key
    plan = yaml.safe_load(plan_path.read_text())
    assert plan["warnings"] == []
    assert (plan["multipliers"]["experts_mult"], plan["multipliers"]["base_experts"]) == (4.0, 4)
    r = run_cli("inspect", MOE_YAML, "--to", "experts=16", "--format", "json")
    assert r.code == 0, r
    rows = {p["name"]: p for p in json.loads(r.out)["parameters"]}
    assert rows["h.0.mlp.router.weight"]["target"]["eps_mult"] == pytest.approx(1 / 4)
    assert rows["h.0.mlp.router.weight"]["target"]["shape"] == [16, 64]
    assert rows["h.0.attn.c_attn.weight"]["target"]["eps_mult"] == 1.0
    r = run_cli("inspect", MOE_YAML, "--to", "width=256", "--format", "json")
    assert json.loads(r.out)["target"]["multipliers"]["router"] == 0.25  # the routers' logits × 1/m


def test_search_then_transfer_to_more_experts_trains(run_cli, workdir):
    spec = write_spec(workdir / "moe.yaml", MOE)
    assert run_cli("search", spec, "--smoke", "--no-transfer", "--run-dir", workdir / "run", "-q").code == 0
    r = run_cli("transfer", workdir / "run", "--to", "experts=8", "--to", "width=64", "--smoke", "-q")
    assert r.code == 0, r
    target = workdir / "run" / "target-n_experts8-width64"
    cfg = yaml.safe_load((target / "config.yaml").read_text())["model"]
    assert (cfg["n_experts"], cfg["base_experts"]) == (8, 4)
    assert yaml.safe_load((target / "result.yaml").read_text())["final_val_loss"] > 0
    # the spec's own target section says the same
    d = {**MOE, "target": {"width": 64, "overrides": {"experts": 8}}}
    assert config.spec_from_dict(d).target.overrides == {"experts": 8}


# ---------------------------------------------------------------------------------------------
# The coord check across the expert count


def _along(broken: pz.Parametrization | None = None, *over: str, sizes=(2, 4, 8, 16)):
    """The check across 2..16 experts, 3 seeds (closest correct slope at 0.65 of its limit on
    moe --smoke; 2..8 needs 6 seeds, checks.AXIS_SEEDS)."""
    spec = moe_spec(*over, depth=2)
    with registered(broken) if broken is not None else contextlib.nullcontext():
        return checks.coord_check(spec, along="experts", sizes=list(sizes), seeds=3)


def _expert_lr(kind: str, exponent: int) -> pz.Parametrization:
    """µP with the experts' and routers' LR × m_E^exponent under ``kind`` (an expert count treated as a fan-in)."""
    table = dict(pz.MUP.table)
    for role in ("hidden", "router"):
        r = pz.MUP.role_rule(kind, role)
        table[(kind, role)] = dataclasses.replace(r, lr=r.lr.plus(experts=exponent))
    return dataclasses.replace(pz.MUP, table=table)


def _no_eps_rule() -> pz.Parametrization:
    """µP without Adam's ε/m_E."""

    def strip(s: rules.Scaling) -> rules.Scaling:
        return rules.Scaling(tuple(t for t in s.terms if t[0] != "experts"))

    table = {k: dataclasses.replace(r, eps=strip(r.eps)) for k, r in pz.MUP.table.items()}
    return dataclasses.replace(pz.MUP, table=table)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_coord_check_across_experts_passes_with_the_rules_and_fails_with_lr_over_m(optimizer):
    kind = "adam" if optimizer == "adamw" else "muon"
    ok = _along(None, f"train.optimizer={optimizer}")
    assert ok.passed, ok.message()
    assert {"h.0.mlp.experts.*.c_fc", "h.1.mlp.router"} <= set(ok.slopes.layer)  # the experts as one
    bad = _along(_expert_lr(kind, -1), f"train.optimizer={optimizer}")
    assert not bad.passed
    assert any("experts.*" in f and "own update" in f for f in bad.failures), bad.failures


def test_coord_check_across_experts_needs_adams_eps_rule_where_eps_matters():
    """ε large enough to compete with the gradient (train.eps 1e-2): without ε/m_E the experts'
    and routers' updates shrink as experts are added."""
    assert _along(None, "train.eps=0.01").passed
    bad = _along(_no_eps_rule(), "train.eps=0.01")
    assert not bad.passed and all(".mlp." in f for f in bad.failures), bad.failures


def test_coord_check_across_experts_from_the_cli(run_cli, workdir):
    r = run_cli("coord-check", MOE_YAML, "--smoke", "--experts", "2,4,8")  # 6 seeds by default
    assert r.code == 0, r
    out = workdir / "runs" / "moe-smoke" / "checks"
    records = __import__("pandas").read_csv(out / "coord_check_experts.csv")
    assert sorted(records.experts.unique()) == [2, 4, 8] and records.width.nunique() == 1
    assert (out / "coord_check_experts_slopes.csv").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--experts", "4"], "at least two"),
        (["--experts", "2,4", "train.optimizer=sgd"], "no experts rule"),
        (["--experts", "1,4"], "more than model.n_experts=1"),
        (["--experts", "2,4", "--depths", "2,4"], "one axis at a time"),
    ],
)
def test_bad_experts_check_input_is_one_line(run_cli, workdir, args, words):
    r = run_cli("coord-check", MOE_YAML, "--smoke", *args)
    assert r.code == 2 and r.err.startswith("error: --experts:") and words in r.err, r
    assert len(r.err.strip().splitlines()) == 1


def test_coord_check_across_experts_of_a_gpt_is_refused(run_cli, workdir):
    r = run_cli("coord-check", CONFIGS / "quickstart.yaml", "--smoke", "--experts", "2,4")
    assert r.code == 2 and r.err.startswith("error: --experts:") and "gpt family" in r.err, r


def test_moe_model_builds_at_any_expert_count():
    spec = moe_spec(n_experts=6, top_k=3)
    model, _ = models.create(spec, spec.hparams, 256)
    x = torch.randint(0, 256, (2, 8))
    assert torch.isfinite(model(x, x)[1])


def test_provenance_records_the_base_expert_count_and_the_guard_checks_it(run_cli, workdir):
    spec = write_spec(workdir / "moe.yaml", MOE)
    assert run_cli("search", spec, "--smoke", "--no-transfer", "--run-dir", workdir / "run", "-q").code == 0
    best_path = workdir / "run" / "best.yaml"
    best = yaml.safe_load(best_path.read_text())
    assert (best["provenance"]["base_experts"], best["provenance"]["base_width"]) == (4, 32)
    best["provenance"]["base_experts"] = 2
    best_path.write_text(yaml.safe_dump(best))
    r = run_cli("transfer", workdir / "run", "--to", "experts=8", "--smoke", "--dry-run")
    assert r.code == 2 and "base_experts: best.yaml has 2" in r.err, r


@pytest.mark.parametrize("exponent, direction", [(1, "over"), (0, "under")])
def test_sgd_has_no_experts_rule_because_neither_candidate_passes(exponent, direction):
    """Why SGD is refused rather than given ×m_E (or nothing): across experts 2..16 at LR 0.1, ×m_E on
    the experts' and routers' LR over-updates the routers and no factor under-updates them."""
    table = dict(pz.MUP.table)
    for role in ("hidden", "router", "vector"):
        r = pz.MUP.role_rule("sgd", role)
        table[("sgd", role)] = dataclasses.replace(r, lr=r.lr.plus(experts=exponent))
    candidate = dataclasses.replace(
        pz.MUP, table=table, axis_kinds={**pz.MUP.axis_kinds, "experts": rules.KINDS}
    )
    spec = moe_spec("train.optimizer=sgd", depth=2)
    with registered(candidate):
        res = checks.coord_check(spec, along="experts", sizes=[2, 4, 8, 16], seeds=3, lr=0.1)
    assert not res.passed
    router = res.slopes[(res.slopes.layer.str.endswith("mlp.router")) & (res.slopes.metric == "own")]
    worst = router.loc[router.slope.abs().idxmax()].slope
    assert (worst > 0.5) if direction == "over" else (worst < -0.5), router
