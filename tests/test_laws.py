"""LR laws across horizon and batch size: the fit on synthetic curves, the transfer arithmetic, and
the search -> laws -> transfer flow through the CLI (issue 12)."""

from __future__ import annotations

import csv
import math
import random
import re

import pytest
import yaml

from mutune import laws, planning
from mutune.laws_run import line_search

from .conftest import CONFIGS


def synthetic_loss(k: float, a: float, m: float, noise: float, rng: random.Random):
    """A loss over log2 LR with its minimum at a + k·log2(m), plus seeded noise: a known exponent."""
    centre = a + k * math.log2(m)

    def loss_at(lr: float) -> float:
        return 2.0 + 0.3 * (math.log2(lr) - centre) ** 2 + rng.gauss(0.0, noise)

    return loss_at


def fitted(k: float, multiples: list[float], noise: float, seed: int = 0) -> laws.Law:
    rng = random.Random(seed)
    stars = []
    for m in multiples:
        lrs, losses = line_search(synthetic_loss(k, -7.0, m, noise, rng), 2.0**-7, 0.5, 5)
        opt = laws.lr_optimum(lrs, losses)
        assert opt is not None and opt.interior
        stars.append(opt.lr)
    return laws.fit_law("steps", multiples, stars)


@pytest.mark.parametrize("k", [-0.3, -0.6, 0.2])
def test_fit_recovers_a_known_exponent_within_its_interval(k):
    law = fitted(k, [0.125, 0.25, 0.5, 1.0], noise=0.01)
    lo, hi = law.interval
    assert lo <= k <= hi, (k, law.interval)
    assert hi - lo < 0.4  # and the interval says something
    assert abs(law.exponent - k) < 0.1


def test_noiseless_fit_is_exact_and_two_points_have_no_interval():
    law = fitted(-0.5, [0.5, 1.0], noise=0.0)  # the parabola is exact on a quadratic
    assert law.interval is None
    assert law.exponent == pytest.approx(-0.5, abs=1e-9)
    assert law.lr_at(1.0) == pytest.approx(2.0**-7, rel=1e-9)


def test_a_flat_law_is_not_mistaken_for_a_falling_one():
    law = fitted(0.0, [0.125, 0.25, 0.5, 1.0], noise=0.01, seed=3)
    lo, hi = law.interval
    assert lo <= 0.0 <= hi
    assert not lo <= -0.3 <= hi  # a wrong exponent would be caught


def test_line_search_extends_the_grid_until_the_optimum_is_inside():
    calls = []

    def loss_at(lr: float) -> float:
        calls.append(lr)
        return (math.log2(lr) + 4.5) ** 2  # optimum at 2^-4.5; the grid starts at 2^-7 ± 1 octave

    lrs, losses = line_search(loss_at, 2.0**-7, 0.5, 5)
    opt = laws.lr_optimum(lrs, losses)
    assert opt.interior and math.log2(opt.lr) == pytest.approx(-4.5)
    assert len(calls) == 5 + 4 and lrs == sorted(lrs)  # four more points, upwards


def test_line_search_gives_up_at_the_edge_after_its_extra_points():
    lrs, losses = line_search(lambda lr: -math.log2(lr), 1.0, 1.0, 3, max_extra=2)
    opt = laws.lr_optimum(lrs, losses)
    assert not opt.interior and "highest value of the grid" in opt.note and len(lrs) == 5


def test_diverged_points_never_win():
    opt = laws.lr_optimum([0.1, 0.2, 0.4, 0.8], [3.0, 2.5, math.inf, 1.0])
    assert opt.lr == 0.8 and not opt.interior


LAW = {
    "steps": {
        "exponent": -0.25,
        "interval": [-0.35, -0.15],
        "points": [{"multiple": 0.25}, {"multiple": 1.0}],
    }
}
HP = {"lr": 0.01, "weight_decay": 0.1}


def test_plan_scales_the_lr_by_the_ratio_to_the_exponent():
    lp = laws.plan_laws(LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 800, "batch_size": 16})
    assert lp.hparams["lr"] == pytest.approx(0.01 * 8**-0.25)
    assert lp.hparams["weight_decay"] == 0.1  # not asked to follow the timescale
    (adj,) = lp.adjustments
    assert adj["ratio"] == 8 and adj["lr_before"] == 0.01 and "train.steps" in adj["description"]
    assert lp.covered == {"train.steps"} and not lp.warnings  # 8x past a fitted 1x: at the limit, no warning


def test_plan_warns_past_eight_times_the_fitted_range_with_the_factor():
    lp = laws.plan_laws(LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 3200, "batch_size": 16})
    (w,) = lp.warnings
    # the range ends at the proxy's own value (1×): the factor past it is the target's, said once
    assert "the target is at 32×, past the fitted range by that factor" in w and "train.steps" in w
    assert "32.0×" not in w
    short = laws.plan_laws(LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 1, "batch_size": 16})
    assert "25× past the range's edge (0.25×)" in short.warnings[0]  # below the range too: 0.25 / 0.01


def test_a_law_whose_interval_includes_zero_is_not_applied_and_the_plan_says_why():
    """Issue 26 changed this: such a law used to be applied with a warning (the user decides); a noisy
    exponent moved the LR the wrong way in bench/RESULTS.md §9, so now the LR is copied."""
    flat = {"steps": {**LAW["steps"], "exponent": -0.1, "interval": [-0.99, 0.78]}}
    lp = laws.plan_laws(flat, HP, {"steps": 100, "batch_size": 16}, {"steps": 200, "batch_size": 16})
    assert any("includes 0" in w and "copied" in w for w in lp.warnings)
    assert lp.hparams["lr"] == 0.01  # copied
    (adj,) = lp.adjustments
    assert adj["applied"] is False and adj["lr_after"] == 0.01 and "not applied" in adj["description"]


def test_plan_without_a_law_for_the_axis_changes_nothing():
    lp = laws.plan_laws(LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 100, "batch_size": 64})
    assert lp.hparams == HP and not lp.adjustments and not lp.covered
    assert (
        laws.plan_laws(None, HP, {"steps": 1, "batch_size": 1}, {"steps": 9, "batch_size": 1}).hparams == HP
    )


def test_plan_combines_steps_and_batch_laws():
    both = {
        **LAW,
        "batch_size": {"exponent": 0.5, "interval": None, "points": [{"multiple": 0.5}, {"multiple": 2}]},
    }
    lp = laws.plan_laws(both, HP, {"steps": 100, "batch_size": 16}, {"steps": 400, "batch_size": 64})
    assert lp.hparams["lr"] == pytest.approx(0.01 * 4**-0.25 * 4**0.5)
    assert lp.covered == {"train.steps", "train.batch_size"}


def test_no_laws_keeps_the_hparams_and_says_so():
    lp = laws.plan_laws(
        LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 800, "batch_size": 16}, no_laws=True
    )
    assert lp.hparams == HP and lp.skipped and not lp.adjustments


def test_timescale_decay_keeps_lr_times_decay_times_steps():
    lp = laws.plan_laws(
        LAW, HP, {"steps": 100, "batch_size": 16}, {"steps": 800, "batch_size": 16}, timescale=True
    )
    lr, wd = lp.hparams["lr"], lp.hparams["weight_decay"]
    assert lr * wd * 800 == pytest.approx(0.01 * 0.1 * 100)
    assert lp.adjustments[-1]["axis"] == "hparams.weight_decay"
    same = laws.plan_laws(
        None, HP, {"steps": 100, "batch_size": 16}, {"steps": 100, "batch_size": 16}, timescale=True
    )
    assert same.hparams == HP  # nothing moved: nothing to keep


@pytest.mark.parametrize(
    "override, key",
    [
        ("search.laws.seq_len=[0.5,1]", "search.laws.seq_len"),
        ("search.laws.steps=[0,1]", "search.laws.steps[0]"),
        ("search.laws.batch_size=[-1,1]", "search.laws.batch_size[0]"),
        ("search.laws.steps=[1.0]", "search.laws.steps"),
        ("search.laws.steps=[1,1]", "search.laws.steps"),
    ],
)
def test_bad_laws_are_one_line_exit_2(override, key, run_cli, workdir):
    r = run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", override, "--no-transfer")
    assert r.code == 2 and key in r.err and len(r.err.strip().splitlines()) == 1, r
    assert not (workdir / "runs").exists()


def read(path):
    return yaml.safe_load(path.read_text())


def test_search_fits_the_law_and_transfer_applies_it(run_cli, workdir):
    r = run_cli(
        "search", CONFIGS / "quickstart.yaml", "--smoke", "search.laws.steps=[0.5,1.0]", "--no-transfer"
    )
    assert r.code == 0, r
    run = workdir / "runs" / "quickstart-smoke"
    best = read(run / "best.yaml")
    law = best["laws"]["steps"]
    assert [p["multiple"] for p in law["points"]] == [0.5, 1.0] and [
        p["train.steps"] for p in law["points"]
    ] == [6, 12]
    assert law["interval"] is None and math.isfinite(law["exponent"]) and law["flops"] > 0
    prov = best["provenance"]
    assert prov["search_flops"] == pytest.approx(prov["trials_flops"] + law["flops"])

    # without a law for the axis, the warning names the command that fits one
    p = planning.plan(run, ["train.batch_size=2"], smoke=True)
    assert any("mutune laws" in w and str(run) in w for w in p.warnings)

    r = run_cli("transfer", run, "--to", "train.steps=400", "--smoke")
    assert r.code == 0, r
    expect = best["hparams"]["lr"] * (400 / 12) ** law["exponent"]
    plan = read(run / "target-steps400" / "plan.yaml")
    assert plan["transferred_hparams"]["lr"] == best["hparams"]["lr"]
    assert plan["hparams"]["lr"] == pytest.approx(expect)
    # 33x past 1x, said once: "at 33×, past the fitted range by that factor", not "33×, 33.0× past"
    assert any("the target is at 33.3×, past the fitted range by that factor" in w for w in plan["warnings"])
    assert not any(re.search(r"(\d+)×, \1(\.0)?× past", w) for w in plan["warnings"])
    assert not any("does not µTransfer" in w for w in plan["warnings"])  # the law covers it
    result = read(run / "target-steps400" / "result.yaml")
    assert result["hparams"]["lr"] == pytest.approx(expect)  # what it trained with
    assert result["transfer"]["transferred_hparams"]["lr"] == best["hparams"]["lr"]
    assert result["transfer"]["adjusted_hparams"]["lr"] == pytest.approx(expect)

    r = run_cli("transfer", run, "--to", "train.steps=24", "--smoke", "--no-laws")
    assert r.code == 0, r
    target = run / "target-steps24-nolaws"
    assert read(target / "plan.yaml")["hparams"]["lr"] == best["hparams"]["lr"]
    assert read(target / "result.yaml")["hparams"]["lr"] == best["hparams"]["lr"]

    # extending the fit trains only the new multiple's points, and three points give an interval
    before = {row["key"] for row in csv.DictReader((run / "laws" / "runs.csv").open())}
    r = run_cli("laws", run, "--steps", "0.25")
    assert r.code == 0, r
    rows = list(csv.DictReader((run / "laws" / "runs.csv").open()))
    assert {row["multiple"] for row in rows if row["key"] not in before} == {"0.25"}
    law3 = read(run / "best.yaml")["laws"]["steps"]
    assert [p["multiple"] for p in law3["points"]] == [0.25, 0.5, 1.0] and law3["interval"] is not None

    # a batch-size law beside it: both kept, and a target at another batch size gets it
    r = run_cli("laws", run, "--batch-size", "0.5,1")
    assert r.code == 0, r
    both = read(run / "best.yaml")["laws"]
    assert set(both) == {"steps", "batch_size"} and [
        p["train.batch_size"] for p in both["batch_size"]["points"]
    ] == [2, 4]
    p = planning.plan(run, ["train.batch_size=2"], smoke=True)
    assert p.adjustments[0]["axis"] == "train.batch_size" and not any(
        "does not µTransfer" in w for w in p.warnings
    )
    assert p.hparams.lr == pytest.approx(best["hparams"]["lr"] * 0.5 ** both["batch_size"]["exponent"])

    r = run_cli("laws", run, "--steps", "0.3")  # 3.6 steps
    assert r.code == 2 and "--steps" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_laws_stay_in_best_yaml_only_around_the_winner_they_were_fitted_for(tmp_path):
    from mutune.laws_run import merge

    (tmp_path / "laws").mkdir()
    hp = {"lr": 0.01, "init_std": 0.05}
    doc = {"around": {"trial_number": 3, "hparams": hp}, "laws": {"steps": {"exponent": -0.2, "flops": 5.0}}}
    (tmp_path / "laws" / "laws.yaml").write_text(yaml.safe_dump(doc))
    best = merge({"hparams": hp, "provenance": {"trial_number": 3, "search_flops": 10.0}}, tmp_path)
    assert best["laws"]["steps"]["exponent"] == -0.2
    assert best["provenance"]["search_flops"] == 15.0 and best["provenance"]["trials_flops"] == 10.0
    again = merge(best, tmp_path)  # rewriting best.yaml does not count the laws twice
    assert again["provenance"]["search_flops"] == 15.0
    other = merge(
        {"hparams": {**hp, "lr": 0.02}, "provenance": {"trial_number": 7, "search_flops": 10.0}}, tmp_path
    )
    assert "laws" not in other and other["provenance"]["search_flops"] == 10.0
