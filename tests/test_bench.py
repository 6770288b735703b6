"""The benchmarks' --quick variants run end to end (correctness only: no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def bench(script: str, *args: str, cwd) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.bench
def test_transfer_fidelity_quick(tmp_path):
    out = bench("transfer_fidelity.py", "--run-dir", str(tmp_path / "tf"), cwd=tmp_path)
    assert "µP drift" in out and "SP drift" in out and "loss at each width's optimum" in out
    assert (tmp_path / "tf" / "checks" / "sweep-lr.png").is_file()
    assert (tmp_path / "tf" / "checks" / "sweep-lr-summary.csv").is_file()


@pytest.mark.bench
def test_mutransfer_vs_direct_quick(tmp_path):
    out = bench("mutransfer_vs_direct.py", "--run-dir", str(tmp_path / "mvd"), cwd=tmp_path)
    for row in (
        "µTransfer, ladder (default)",
        "direct at 128, 1x",
        "direct at 128, 3x",
        "direct at 128, 10x",
        "E[target loss] against the tuning budget",
        "4 finalists, 2nd seed",
        "samplers: realised proxy searches",
    ):
        assert row in out
    assert "matches or beats direct at 10x" in out
    assert "(the same as the estimate's realised pick" in out  # mutune.search picks what the estimate says
    assert (tmp_path / "mvd" / "w32-s0" / "trials.csv").is_file()
    assert (tmp_path / "mvd" / "search-b0.2" / "best.yaml").is_file()


@pytest.mark.bench
def test_mutransfer_vs_direct_wsd_quick(tmp_path):
    """Under WSD the pool's cooldown branches stand in for successive halving's rung runs: the
    estimate's realised pick must be the winner a real ``mutune.search`` with search.fidelity picks."""
    out = bench("mutransfer_vs_direct.py", "--wsd", "--run-dir", str(tmp_path / "mvd"), cwd=tmp_path)
    assert "µTransfer, successive halving (Monte Carlo s.e." in out
    assert "4@5st+2@10st" in out  # the plan: 4 configurations at 5 steps, the best 2 continued to 10
    assert "(the same as the estimate's realised pick" in out
    assert "samplers" not in out


@pytest.mark.bench
def test_throughput_quick(tmp_path):
    out = bench("throughput.py", cwd=tmp_path)
    assert "mutune µP / plain loop" in out and "µP time over SP" in out
    assert "search, 1 worker(s)" in out and "search, 2 worker(s)" in out


@pytest.mark.bench
def test_step_profile_quick(tmp_path):
    out = bench("step_profile.py", cwd=tmp_path)
    assert "===== plain:" in out and "===== mutune µP:" in out and "run_backward" in out


@pytest.mark.bench
def test_coord_margins_quick(tmp_path):
    out = bench("coord_margins.py", "--out", str(tmp_path / "cm"), cwd=tmp_path)
    assert "gpt        mup              pass" in out and "gpt        embedding/m      fail" in out
    assert "correct µP closest at" in out and len(list((tmp_path / "cm").glob("*.csv"))) == 2


@pytest.mark.bench
def test_grad_clip_width_quick(tmp_path):
    out = bench("grad_clip_width.py", cwd=tmp_path)
    assert "base-width norm: largest deviation" in out and "plain" in out


@pytest.mark.bench
def test_depth_transfer_quick(tmp_path):
    out = bench("depth_transfer.py", "--run-dir", str(tmp_path / "dt"), cwd=tmp_path)
    assert "CompleteP drift" in out and "no depth scaling: drift" in out and "target width" in out
    assert (tmp_path / "dt" / "a1" / "checks" / "sweep-lr-depth.png").is_file()


@pytest.mark.bench
def test_cli_startup_quick(tmp_path):
    out = bench("cli_startup.py", cwd=tmp_path)
    assert "target:" in out and "mutune --help" in out and "import torch" in out
    assert "this/ref" in out and "mutune show-config" in out


@pytest.mark.bench
def test_horizon_transfer_quick(tmp_path):
    out = bench("horizon_transfer.py", "--decay", "--run-dir", str(tmp_path / "ht"), cwd=tmp_path)
    assert "fitted exponent k =" in out and "predicted - measured =" in out
    assert "loss with the law" in out and "(timescale kept)" in out
    best = (tmp_path / "ht" / "best.yaml").read_text()
    assert "laws:" in best and (tmp_path / "ht" / "laws" / "runs.csv").is_file()


@pytest.mark.bench
def test_horizon_transfer_wsd_quick(tmp_path):
    out = bench("horizon_transfer.py", "--wsd", "--run-dir", str(tmp_path / "ht"), cwd=tmp_path)
    assert "wsd schedule, 2 seed(s) per point, horizons from cooldown branches" in out
    assert "what mutune transfers:" in out and "separate runs of each horizon" in out
    best = (tmp_path / "ht" / "best.yaml").read_text()
    assert "branched: true" in best


@pytest.mark.bench
def test_umup_quick(tmp_path):
    out = bench("umup.py", "--run-dir", str(tmp_path / "umup"), cwd=tmp_path)
    assert "targets: (a)" in out and "target (a):" in out and "target (b):" in out
    assert "umup width" in out and "LR only" in out and "full space" in out


@pytest.mark.bench
def test_vit_width_quick(tmp_path):
    out = bench("vit_width.py", "--run-dir", str(tmp_path / "vit"), cwd=tmp_path)
    assert "target: |µP LR drift| <= 0.5 log2 and |SP LR drift| >= 1.0 log2" in out
    assert "mup width   32" in out and "sp width   64" in out
    assert "mup drift of the optimum" in out and "sp drift of the optimum" in out and "target: " in out
    assert (tmp_path / "vit" / "checks" / "sweep-lr-summary.csv").is_file()


@pytest.mark.bench
def test_experts_transfer_quick(tmp_path):
    out = bench("experts_transfer.py", "--run-dir", str(tmp_path / "et"), cwd=tmp_path)
    assert out.index("targets:") < out.index("1. across experts")  # the targets are stated before the runs
    for row in (
        "µP drift across experts",
        "SP drift across width",
        "µP drift across width",
        "clipping norm within",
    ):
        assert row in out
    assert (tmp_path / "et" / "width" / "checks" / "sweep-lr.png").is_file()
    assert (tmp_path / "et" / "experts" / "e4" / "checks" / "sweep-lr-summary.csv").is_file()
