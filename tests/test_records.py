"""A call that finds nothing to do changes no record (issue 23): the README's Python snippet, run after the
set-up's search, used to rewrite the finished run's config.yaml (``n_trials: 4``) and best.yaml's plan,
and ``mutune report`` then said "16 of 4 trials finished". A finished target, resumed, keeps its files
too, and a target that ends leaves no ``.lock`` behind.
"""

from __future__ import annotations

import pytest
import yaml

from mutune import config, report, search, transfer

from .conftest import TINY, write_spec

RECORDS = ("config.yaml", "best.yaml", "trials.csv", "search_plan.yaml", "study.journal")


def _snapshot(folder, names) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


@pytest.fixture
def searched(workdir):
    spec = write_spec(workdir / "tiny.yaml", {**TINY, "search": {"n_trials": 3}})
    run = workdir / "runs" / "tiny"
    search.search(config.load_spec(spec), run_dir=run, transfer=False, argv=["test"])
    return spec, run


def test_a_search_asking_for_fewer_trials_changes_no_record(searched):
    spec, run = searched
    before = _snapshot(run, RECORDS)
    assert {"config.yaml", "best.yaml", "trials.csv", "study.journal"} <= set(before)
    res = search.search(config.load_spec(spec, ["search.n_trials=2"]), run_dir=run, transfer=False)
    assert res.n_finished == 3 and res.best.provenance["n_trials_finished"] == 3
    assert _snapshot(run, RECORDS) == before  # byte for byte
    rep = report.report(run)
    assert rep.n_trials() == 3 and rep.counts()["finished"] == 3  # "3 of 3", not "3 of 2"


def test_a_search_asking_for_more_trials_runs_them_and_records_it(searched):
    spec, run = searched
    search.search(config.load_spec(spec, ["search.n_trials=4"]), run_dir=run, transfer=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["n_trials"] == 4
    assert yaml.safe_load((run / "best.yaml").read_text())["provenance"]["n_trials_finished"] == 4


def test_the_cli_says_there_was_nothing_to_run(searched, run_cli):
    spec, run = searched
    r = run_cli("search", spec, "--no-transfer", "search.n_trials=3")
    assert r.code == 0, r
    assert "nothing to run" in r.err and "3 finished" in r.err


def test_a_finished_target_resumed_keeps_its_files_and_no_lock(searched):
    spec, run = searched
    first = transfer.transfer(run, ["width=48"])
    target = first.plan.target_dir
    assert not (target / ".lock").exists()  # the run ended: nothing holds the folder
    names = ("plan.yaml", "config.yaml", "result.yaml", "metrics.csv", "checkpoint.pt")
    before = _snapshot(target, names)
    again = transfer.transfer(run, ["width=48"], resume=True)
    assert again.result.final_val_loss == first.result.final_val_loss
    assert _snapshot(target, names) == before
    assert not (target / ".lock").exists()
