"""The small items of issue 23, each with the bug it closes: an ETA that counted the set-up, ladder
progress whose denominator jumped, an unfinished target's curve labelled "final", interrupted trials
drawn as diverged, ``report`` without RUN_DIR picking a run other than the last one used, "µ" escaped
in plan.yaml, ``{CONFIG}`` and broken sentences in ``--help``, "Value error," in a choice's error,
matplotlib listed twice.
"""

from __future__ import annotations

import os
import re
import sys
import time

import matplotlib
import pytest
import yaml

from mutune import cli, config, report, search, transfer
from mutune.cli.progress import Display
from mutune.events import TrialEvent

from .conftest import ROOT, TINY

matplotlib.use("Agg")


def _event(number: int, finished: int, n_trials: int) -> TrialEvent:
    return TrialEvent(
        number=number,
        state="COMPLETE",
        value=3.0,
        params={},
        seconds=1.2,
        reason="",
        n_trials=n_trials,
        best_value=3.0,
        best_number=0,
        finished=finished,
        running=0,
    )


def test_the_eta_counts_trials_not_the_set_up_before_them(capsys, monkeypatch):
    monkeypatch.setenv("CI", "true")
    d = Display()
    d.t0 -= 60  # a minute of imports, corpus and coord check before the first trial
    d.search_started(config.spec_from_dict(TINY), ROOT, 0)  # 3 trials
    d.trial_ended(_event(0, 1, 3))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    eta = re.search(r"eta (\S+)$", line).group(1)
    assert eta in ("0s", "1s"), line  # not 2 × 60 s


def test_ladder_progress_keeps_one_denominator(capsys, monkeypatch):
    """The proxy phase's events say 4 trials, the ladder's 6; the plan (4 proxy + 2 ladder) says 6."""
    monkeypatch.setenv("CI", "true")
    d = Display()
    d.search_started(config.spec_from_dict(TINY, ["search.n_trials=6"]), ROOT, 0)
    for i in range(4):
        d.trial_ended(_event(i, i + 1, 4))
    for i in range(4, 6):
        d.trial_ended(_event(i, i + 1, 6))
    totals = re.findall(r"\[\d+/(\d+) finished", capsys.readouterr().err)
    assert totals == ["6"] * 6


@pytest.fixture
def run(workdir):
    spec = config.spec_from_dict({**TINY, "name": "tr", "search": {"n_trials": 2}})
    run = workdir / "runs" / "tr"
    search.search(spec, run_dir=run, transfer=False, argv=["test"])
    return run


def test_plan_yaml_keeps_its_unicode(run):
    transfer.transfer(run, ["width=48", "train.steps=10"], dry_run=False)
    text = (run / "target-width48-steps10" / "plan.yaml").read_text(encoding="utf-8")
    assert "µTransfer" in text and "\\xB5" not in text
    assert any("µTransfer" in w for w in yaml.safe_load(text)["warnings"])


def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_an_unfinished_target_is_not_labelled_final(run):
    import matplotlib.pyplot as plt

    from mutune import report_figures

    done = transfer.transfer(run, ["width=48"]).plan.target_dir
    labels = _legend(report_figures._curves(report.report(run), plt))
    assert any(x.startswith("target w=48 val, final ") for x in labels), labels
    (done / "result.yaml").unlink()  # as a target stopped half way leaves it: metrics, no result
    labels = _legend(report_figures._curves(report.report(run), plt))
    assert not any("final" in x for x in labels if x.startswith("target")), labels
    assert any(x.startswith("target w=48 val, incomplete at step 8, last ") for x in labels), labels
    plt.close("all")


def test_interrupted_trials_are_not_drawn_as_diverged(run):
    import matplotlib.pyplot as plt

    from mutune import report_figures

    rep = report.report(run)
    rep.trials.loc[rep.trials.number == 1, ["state", "fail_reason", "loss"]] = ["FAIL", "interrupted", None]
    labels = _legend(report_figures._history(rep, plt))
    assert report_figures.STOPPED in labels and not any(x.startswith("diverged") for x in labels), labels
    rep.trials.loc[rep.trials.number == 1, "fail_reason"] = "diverged: loss is nan"
    labels = _legend(report_figures._history(rep, plt))
    assert "diverged / failed (no loss)" in labels and report_figures.STOPPED not in labels, labels
    plt.close("all")


def test_the_latest_run_is_the_last_one_used(workdir):
    runs = workdir / "runs"
    for name, age in (("old", 100), ("new", 50)):
        (runs / name / "target-width64").mkdir(parents=True)
        for f in ("best.yaml", "config.yaml", "trials.csv"):
            (runs / name / f).write_text("x\n")
            os.utime(runs / name / f, (time.time() - age,) * 2)
        os.utime(runs / name / "target-width64", (time.time() - age,) * 2)
        os.utime(runs / name, (time.time() - age,) * 2)
    assert config.RunDir.latest(runs).path.name == "new"
    (runs / "old" / "target-width64" / "metrics.csv").write_text("step\n")  # a transfer of old, just now
    assert config.RunDir.latest(runs).path.name == "old"


def test_help_shows_arguments_plainly_and_whole_sentences(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["coord-check", "--help"]) == 0
    text = capsys.readouterr().out
    assert "{CONFIG}" not in text and "[OPTIONS] CONFIG [KEY=VALUE]..." in text
    assert cli.main(["transfer", "--help"]) == 0
    text = capsys.readouterr().out
    # one paragraph of the docstring, not cut where its source line ended
    assert re.search(r"with --nproc\. A target at another train\.steps", text), text


def test_a_bad_choice_says_what_is_allowed_without_pydantics_prefix(capsys):
    assert cli.main(["report", "runs/x", "--format", "xml"]) == 2
    err = capsys.readouterr().err
    assert "Value error" not in err and "'xml' is not one of 'table', 'csv', 'json', 'md'" in err


def test_each_dependency_is_listed_once():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=\[ ]", d)[0] for d in deps]
    assert len(names) == len(set(names)), names
