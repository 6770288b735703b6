"""Numbers that agree with each other (issue 23, item 6):

- the coord check speaks one vocabulary everywhere: a slope is shown with the limit of its own
  measure (an own update's ±0.5, not |x|'s ±0.3) and its share of it, and an exempt slope is marked
  as exempt, with the reason, where it is shown;
- a plan writes every big number in one style (SI prefixes, no '1.3e+22' beside '907E');
- a plan's memory fit is judged against the device the run would use here, or ``--gpu-memory``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from mutune import config, search
from mutune.checks import verdict

from .conftest import CONFIGS, TINY, write_spec


def test_the_gate_line_names_the_closest_slope_with_its_own_limit(run_cli, workdir):
    spec = write_spec(workdir / "tiny.yaml", {**TINY, "search": {"n_trials": 1}})
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 0, r
    (line,) = [x for x in r.err.splitlines() if x.startswith("coord check passed")]
    assert "largest |slope|" not in line
    m = re.search(
        r"the closest slope, (\S+) (\|x\||\|x-x0\||own update) at t=(\d+): ([+-][\d.]+) against its limit ±([\d.]+), (\d+)% of it",
        line,
    )
    assert m, line
    measure, slope, limit, share = m.group(2), float(m.group(4)), float(m.group(5)), int(m.group(6))
    metric = {v: k for k, v in verdict.MEASURES.items()}[measure]
    assert limit == verdict.LIMITS[metric]  # the measure's own limit, not always |x|'s
    assert abs(share - round(100 * abs(slope) / limit)) <= 1


def test_coord_check_rows_carry_their_limit_and_exemptions_are_marked(run_cli, workdir):
    r = run_cli("coord-check", CONFIGS / "quickstart.yaml", "--smoke", "--seeds", "1")
    assert r.code == 0, r
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in r.out.splitlines() if line.startswith("│")]
    assert rows
    names = {v: k for k, v in verdict.MEASURES.items()}
    for layer, measure, limit, *_ in rows:
        assert limit == f"±{verdict.LIMITS[names[measure]]:g}", (layer, measure, limit)
    logits = next(cells for layer, measure, _, *cells in rows if layer == "logits" and measure == "|x|")
    assert (
        logits[0].endswith("*") and float(logits[0][:-1]) < -verdict.LIMITS["x"]
    )  # shrinking at init: exempt
    notes = [x for x in r.out.splitlines() if x.startswith("* exempt (")]
    assert notes and "logits |x| t=0" in notes[0] and "allowed to shrink" in notes[0]
    closest = re.search(r"the closest, (\S+) (\|x\||\|x-x0\||own update) at t=\d+", r.out)
    assert closest and any(row[0] == closest.group(1) and row[1] == closest.group(2) for row in rows)


def test_a_plan_writes_big_numbers_in_one_style(run_cli, workdir):
    r = run_cli("transfer", CONFIGS / "gpt3-6.7b.yaml", "--dry-run")
    assert r.code == 0, r
    assert not re.search(r"\de[+-]\d", r.out), r.out  # no 1.3e+22 beside 907E
    (cost,) = [x for x in r.out.splitlines() if "tuning cost" in x]
    assert re.search(r"\d+(\.\d+)?E / \d+(\.\d+)?Z FLOPs", cost), cost


@pytest.fixture
def tiny_run(workdir):
    spec = config.spec_from_dict({**TINY, "name": "tr", "search": {"n_trials": 1}})
    search.search(spec, run_dir=workdir / "runs" / "tr", transfer=False, argv=["test"])
    return workdir / "runs" / "tr"


def test_memory_fit_is_judged_against_this_device_or_the_gpu_memory_given(tiny_run, run_cli, monkeypatch):
    monkeypatch.setenv("MUTUNE_MEMORY_LIMIT", "1GiB")  # this machine, as far as the plan can tell
    args = ["transfer", tiny_run, "--to", "width=8192", "--dry-run", "--save-plan", "plan.yaml"]
    r = run_cli(*args)
    assert r.code == 0, r
    (line,) = [x for x in r.out.splitlines() if "memory (est.)" in x]
    assert "does not fit: MUTUNE_MEMORY_LIMIT allows 1 GiB on cpu" in line and "80 GiB" not in line
    assert yaml.safe_load(Path("plan.yaml").read_text())["gpu_gib"] == pytest.approx(1.0)
    r = run_cli(*args, "--gpu-memory", "80")
    (line,) = [x for x in r.out.splitlines() if "memory (est.)" in x]
    assert "fits in 80 GiB (--gpu-memory)" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans a CUDA spec on a machine without CUDA")
def test_a_device_this_machine_lacks_is_assumed_and_said(tiny_run, run_cli):
    r = run_cli("transfer", tiny_run, "--to", "width=64", "--to", "train.device=cuda", "--dry-run")
    assert r.code == 0, r
    assert "an 80 GiB GPU (assumed: no cuda here; --gpu-memory GIB to plan for another)" in r.out
