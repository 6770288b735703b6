"""Width sweeps: the optimum maths on known curves, then tiny real sweeps through the CLI and the API."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from mutune import config, sweep
from mutune import study as study_mod
from mutune.config import SpecError

from .conftest import TINY, write_spec

# ---------------------------------------------------------------------------------------------
# The maths, on synthetic losses with known answers


def test_parabola_through_exact_parabola_finds_its_vertex():
    xs = [-3.0, -2.0, -1.0, 0.0, 1.0]
    ys = [2 * (x + 1.3) ** 2 + 2.5 for x in xs]
    i, xr, yr, interior, note = sweep.find_optimum(xs, ys)
    assert (i, interior, note) == (2, True, "")
    assert xr == pytest.approx(-1.3, abs=1e-12) and yr == pytest.approx(2.5, abs=1e-12)


def test_parabola_on_an_uneven_grid():
    xs = [-3.0, -2.5, -1.0, 0.5]
    ys = [(x + 1.2) ** 2 for x in xs]
    i, xr, yr, interior, _ = sweep.find_optimum(xs, ys)
    assert i == 2 and interior
    assert xr == pytest.approx(-1.2, abs=1e-12) and yr == pytest.approx(0.0, abs=1e-12)


def test_flat_bottom_refines_to_the_middle():
    assert sweep.parabola_vertex((0.0, 1.0, 2.0), (1.0, 1.0, 1.0)) == (1.0, 1.0)
    # symmetric neighbours: the vertex is the middle point whatever the curvature
    assert sweep.parabola_vertex((0.0, 1.0, 2.0), (5.0, 1.0, 5.0))[0] == pytest.approx(1.0)
    # (0, 3), (1, 1), (2, 2): y = 1.5x^2 - 3.5x + 3, vertex at x = 7/6
    xv, yv = sweep.parabola_vertex((0.0, 1.0, 2.0), (3.0, 1.0, 2.0))
    assert xv == pytest.approx(7 / 6) and yv == pytest.approx(1.5 * (7 / 6) ** 2 - 3.5 * 7 / 6 + 3)


@pytest.mark.parametrize(
    "ys, index, note",
    [
        ([1.0, 2.0, 3.0], 0, "lowest"),
        ([3.0, 2.0, 1.0], 2, "highest"),
        ([3.0, 1.0, math.inf, 2.0], 1, "diverged"),
    ],
)
def test_optimum_at_an_edge_or_next_to_divergence_is_not_interior(ys, index, note):
    xs = [float(i) for i in range(len(ys))]
    i, xr, yr, interior, why = sweep.find_optimum(xs, ys)
    assert i == index and not interior and note in why
    assert xr == xs[index] and yr == ys[index]  # no extrapolation beyond the grid


def test_all_diverged_has_no_optimum():
    i, xr, yr, interior, note = sweep.find_optimum([0.0, 1.0], [math.nan, math.inf])
    assert i is None and math.isnan(xr) and not interior and "no finite" in note


WIDTHS = [64, 128, 256, 512]
XS = list(range(-10, -2))  # lr = 2^-10 ... 2^-3


def synthetic_runs(mup_x0, mup_floor, sp_x0, seeds=(0, 1), diverge=()) -> pd.DataFrame:
    """Loss = 0.1 (x - x0)^2 + floor per width, seeds at +-0.01 around it (the mean is exact)."""
    rows = []
    for par, x0s, floors in (("mup", mup_x0, mup_floor), ("sp", sp_x0, mup_floor)):
        for w, x0, floor in zip(WIDTHS, x0s, floors, strict=True):
            for x in XS:
                for s in seeds:
                    diverged = (par, w, x) in diverge
                    loss = 0.1 * (x - x0) ** 2 + floor + (0.01 if s else -0.01)
                    rows.append(
                        {
                            "parametrization": par,
                            "width": w,
                            "param": "lr",
                            "value": 2.0**x,
                            "x": float(x),
                            "seed": s,
                            "state": "FAIL" if diverged else "COMPLETE",
                            "loss": math.nan if diverged else loss,
                            "diverged": diverged,
                        }
                    )
    return pd.DataFrame(rows)


def test_drift_argmin_parabola_and_wider_is_better_on_known_curves():
    runs = synthetic_runs(
        mup_x0=[-6.3, -6.2, -6.1, -6.0],
        mup_floor=[3.0, 2.9, 2.8, 2.7],
        sp_x0=[-6.3, -7.3, -8.3, -9.3],
        diverge={("sp", 512, -3), ("sp", 512, -4)},
    )
    a = sweep.analyze(runs, "lr", max_drift=0.5)
    mup = [a.optimum("mup", w) for w in WIDTHS]
    assert [o.value for o in mup] == [2.0**-6] * 4  # grid argmins
    assert [o.x_refined for o in mup] == pytest.approx([-6.3, -6.2, -6.1, -6.0], abs=1e-9)
    assert [o.loss_refined for o in mup] == pytest.approx([3.0, 2.9, 2.8, 2.7], abs=1e-9)
    assert all(o.interior for o in a.optima)
    assert a.drift["mup"].drift == pytest.approx(0.3, abs=1e-9)
    assert a.drift["mup"].drift_grid == 0.0 and not a.drift["mup"].bound
    assert a.drift["sp"].drift == pytest.approx(-3.0, abs=1e-9)
    assert a.drift["sp"].drift_grid == -3.0  # argmins 2^-6 -> 2^-9
    assert a.optimum("sp", 512).value == 2.0**-9
    w = a.wider["mup"]
    assert w.choice_value == 2.0**-6 and w.ok_at_choice and w.ok_at_optimum
    # at lr = 2^-6: 0.1 * (x0 + 6)^2 + floor
    assert w.losses_at_choice == pytest.approx([3.009, 2.904, 2.801, 2.7])
    assert a.flags == [] and a.passed  # SP drifts by 3 but SP is the control, never flagged
    assert a.wider["sp"].losses_at_choice[-1] == pytest.approx(0.1 * 3.3**2 + 2.7)
    # diverged values are infinite on the curve and never an optimum
    c = a.curves
    assert math.isinf(c[(c.parametrization == "sp") & (c.width == 512) & (c.x == -3)].loss.iloc[0])
    s = a.summary()
    assert list(s.columns[:4]) == ["parametrization", "width", "param", "argmin_value"]
    assert s[s.parametrization == "sp"].shift_from_narrowest.tolist() == pytest.approx([0, -1, -2, -3])


def test_flags_drift_and_a_wider_model_doing_worse():
    runs = synthetic_runs(
        mup_x0=[-6.3, -6.0, -5.5, -5.2],  # drifts +1.1
        mup_floor=[3.0, 2.9, 2.95, 2.7],  # width 256 worse than 128
        sp_x0=[-6.3, -7.3, -8.3, -9.3],
    )
    a = sweep.analyze(runs, "lr", max_drift=1.0)
    assert a.drift["mup"].drift == pytest.approx(1.1, abs=1e-9)
    assert not a.passed
    kinds = " | ".join(a.flags)
    assert "drifted +1.10" in kinds
    assert not a.wider["mup"].ok_at_optimum
    # own optima: 2.9 at 128, then 256's grid argmin (-6 or -5: equal distance 0.5) loss 0.025 + 2.95
    assert a.wider["mup"].worst_increase_at_optimum == pytest.approx(0.075, abs=1e-9)
    assert "each width's optimum" in kinds
    # an optimum at the grid edge is flagged for µP
    edge = synthetic_runs([-2.5, -6.2, -6.1, -6.0], [3.0, 2.9, 2.8, 2.7], [-6.3, -7.3, -8.3, -9.3])
    b = sweep.analyze(edge, "lr")
    assert not b.optimum("mup", 64).interior and b.drift["mup"].bound
    assert any("width 64" in f and "highest" in f for f in b.flags)


def test_wider_check_treats_a_wide_divergence_as_worse():
    assert sweep.analysis._worst_increase([3.0, 2.9, math.inf]) == math.inf
    assert sweep.analysis._worst_increase([3.0, 2.9, 2.95, 2.8]) == pytest.approx(0.05)
    assert sweep.analysis._worst_increase([3.0, 2.9]) == 0.0


def test_axis_and_default_grids():
    assert sweep.default_values("lr", 0.01, 2) == pytest.approx([0.0025, 0.005, 0.01, 0.02, 0.04])
    betas = sweep.default_values("beta2", 0.95)
    assert all(0 < b < 1 for b in betas) and 0.95 in [pytest.approx(b) for b in betas]
    assert [sweep.to_x("beta2", b) for b in betas] == pytest.approx(
        [math.log2(0.05) + k for k in range(-4, 5) if 0.05 * 2**k < 1]
    )
    assert sweep.from_x("beta2", sweep.to_x("beta2", 0.99)) == pytest.approx(0.99)
    with pytest.raises(SpecError) as e:
        sweep.default_values("weight_decay", 0.0)
    assert e.value.key == "hparams.weight_decay"


# ---------------------------------------------------------------------------------------------
# Real sweeps (tiny: 8 steps at widths 32/64, under a second per point)

RUN_COLUMNS = {"parametrization", "width", "param", "value", "x", "seed", "state", "loss", "diverged"}
RUN_COLUMNS |= {"steps", "tokens", "flops", "seconds", "trial", "fail_reason"}


def test_tiny_sweep_through_the_cli_writes_csv_report_and_figure(run_cli, tiny_spec, workdir):
    args = ["sweep", tiny_spec, "--widths", "32,64", "--values", "0.003,0.01,0.03", "--compare", "sp"]
    r = run_cli(*args)
    assert r.code == 0, r
    checks = workdir / "runs" / "tiny" / "checks"
    runs = pd.read_csv(checks / "sweep-lr-runs.csv")
    assert set(runs.columns) >= RUN_COLUMNS
    assert len(runs) == 2 * 2 * 3 and set(runs.state) == {"COMPLETE"}
    assert sorted(set(runs.width)) == [32, 64] and set(runs.parametrization) == {"mup", "sp"}
    assert runs.x.tolist() == pytest.approx([math.log2(v) for v in runs.value])
    assert (runs.flops > 0).all() and (runs.loss > 0).all()
    # µP equals SP at the base width: identical losses there
    base = runs[runs.width == 32].pivot(index="value", columns="parametrization", values="loss")
    assert base.mup.tolist() == base.sp.tolist()
    summary = pd.read_csv(checks / "sweep-lr-summary.csv")
    assert len(summary) == 4
    assert {"argmin_value", "refined_x", "interior", "shift_from_narrowest"} <= set(summary.columns)
    for (par, width), g in runs.groupby(["parametrization", "width"]):
        row = summary[(summary.parametrization == par) & (summary.width == width)].iloc[0]
        assert row.argmin_value == g.loc[g.loss.idxmin(), "value"]
    report = yaml.safe_load((checks / "sweep-lr.yaml").read_text())
    for par in ("mup", "sp"):
        s = summary[summary.parametrization == par].set_index("width")
        assert report["drift"][par]["drift"] == pytest.approx(s.refined_x[64] - s.refined_x[32])
    assert isinstance(report["passed"], bool) and report["passed"] == (report["flags"] == [])
    assert (checks / "sweep-lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # re-running trains nothing: the same trials, the same table
    storage = study_mod.open_storage(str(workdir / "runs" / "tiny" / "study.journal"))
    n_before = len(optuna.load_study(study_name="tiny-sweep-lr", storage=storage).trials)
    assert run_cli(*args).code == 0
    # 12 grid points, 9 trained: SP at the base width is µP's run (identical, above), not trained again
    assert len(optuna.load_study(study_name="tiny-sweep-lr", storage=storage).trials) == n_before == 9
    pd.testing.assert_frame_equal(pd.read_csv(checks / "sweep-lr-runs.csv"), runs)


def test_resume_and_extend_train_only_missing_points(workdir):
    spec = config.spec_from_dict(TINY)
    first = sweep.sweep(spec, "lr", [32], [0.003, 0.01], run_dir=workdir / "r")
    assert first.n_run == 2
    # a wider grid reuses the finished points; the study spec ignores the grid's own keys
    spec2 = config.spec_from_dict(TINY, ["model.width=64", "hparams.lr=0.02"])
    second = sweep.sweep(spec2, "lr", [32, 48], [0.003, 0.01], run_dir=workdir / "r")
    assert second.n_run == 2 and len(second.runs) == 4
    old = first.runs.set_index(["width", "value"]).loss
    new = second.runs.set_index(["width", "value"]).loss
    assert new.loc[old.index].tolist() == old.tolist()
    # a change that does matter is refused, naming the key
    with pytest.raises(SpecError) as e:
        sweep.sweep(
            config.spec_from_dict(TINY, ["train.steps=9"]), "lr", [32], [0.003], run_dir=workdir / "r"
        )
    assert e.value.key == "train.steps"


def test_an_interrupted_point_is_rerun_once(workdir):
    spec = config.spec_from_dict(TINY)
    run_dir = workdir / "r"
    grid = sweep.make_grid(spec, "lr", [32], [0.003, 0.01])
    sspec = sweep.study_spec(spec, grid)
    (run_dir / "checks").mkdir(parents=True)
    sspec, done = sweep.prepare_study(sspec, run_dir, grid)
    assert done == 0 and sspec.search.n_trials == 2
    study = study_mod.open_study(sspec, study_mod.open_storage(str(run_dir / "study.journal")))
    t = study.ask()  # pops the first enqueued point, as a worker would; then it is "killed"
    t.set_user_attr("retry", True)
    study.tell(t, state=TrialState.FAIL)
    res = sweep.sweep(spec, "lr", [32], [0.003, 0.01], run_dir=run_dir)
    trials = study.get_trials()
    assert len(trials) == 3  # the failed attempt, its retry, the other point: nothing twice
    assert [x.state for x in trials[1:]] == [TrialState.COMPLETE] * 2
    retry = next(x for x in trials if "retry_of" in x.user_attrs)
    killed = study_mod.trial_params(trials[0])  # killed before its first suggest: fixed params only
    assert retry.user_attrs["retry_of"] == t.number and retry.params == killed
    assert set(res.runs.state) == {"COMPLETE"}
    assert res.runs.set_index("value").trial[killed["value"]] == retry.number


def test_two_workers_run_each_point_exactly_once(run_cli, tiny_spec, workdir):
    r = run_cli("sweep", tiny_spec, "--widths", "32,64", "--values", "0.003,0.01,0.03", "--workers", "2")
    assert r.code == 0, r
    storage = study_mod.open_storage(str(workdir / "runs" / "tiny" / "study.journal"))
    trials = optuna.load_study(study_name="tiny-sweep-lr", storage=storage).trials
    points = [(t.params["width"], t.params["value"]) for t in trials]
    assert len(points) == 6 and len(set(points)) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took points
    runs = pd.read_csv(workdir / "runs" / "tiny" / "checks" / "sweep-lr-runs.csv")
    assert set(runs.state) == {"COMPLETE"} and len(runs) == 6


def test_strict_exits_1_on_a_flag(run_cli, tiny_spec, workdir):
    # LRs far too small: the loss falls all the way to the top of the grid, an edge optimum
    args = ["sweep", tiny_spec, "--widths", "32", "--values", "1e-6,2e-6"]
    assert run_cli(*args).code == 0
    report = yaml.safe_load((workdir / "runs" / "tiny" / "checks" / "sweep-lr.yaml").read_text())
    assert not report["passed"] and "highest value of the grid" in report["flags"][0]
    assert run_cli(*args, "--strict").code == 1


def test_any_hparam_can_be_swept(workdir):
    spec = config.spec_from_dict(TINY)
    res = sweep.sweep(spec, "alpha_out", [32], [0.5, 1.0, 2.0], run_dir=workdir / "r")
    assert list(res.runs.value) == [0.5, 1.0, 2.0] and set(res.runs.param) == {"alpha_out"}
    assert len(set(res.runs.loss)) == 3  # the value reached the model
    assert res.files["figure"].is_file()


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--param", "lrr"], "--param"),
        (["--widths", "32,40"], "--widths"),  # 40 is not a multiple of head_dim 16
        (["--widths", "32,x"], "--widths"),
        (["--values", "-0.01,0.01"], "--values"),
        (["--values", "0.01,0.01"], "--values"),
        (["--compare", "ntk"], "--compare"),
        (["--param", "weight_decay"], "hparams.weight_decay"),  # 0: no log2 grid around it
        (["--param", "beta1", "--values", "0.9,1.5"], "--values"),
        (["--seeds", "0"], "--seeds"),
    ],
)
def test_bad_sweep_arguments_exit_2_naming_the_option(extra, key, run_cli, tiny_spec, workdir):
    r = run_cli("sweep", tiny_spec, *extra)
    assert r.code == 2, r
    assert key in r.err and len(r.err.strip().splitlines()) == 1
    assert not (workdir / "runs" / "tiny" / "study.journal").exists()


def test_smoke_sweep_uses_tiny_widths(workdir):
    spec = write_spec(workdir / "s.yaml", {**TINY, "train": {**TINY["train"], "steps": 50}})
    res = sweep.sweep(config.load_spec(spec), "lr", [256, 512], smoke=True, compare="sp")
    assert res.grid.widths == (32, 64) and len(res.grid.values) == 3 and len(res.grid.seeds) == 1
    assert set(res.runs.steps) == {12} and res.run_dir.name == "tiny-smoke"
