"""End to end through the CLI: search -> best.yaml + trials.csv -> transfer; errors; dry runs."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from .conftest import CONFIGS, TINY, write_spec


def test_search_then_transfer_uses_best_hparams_unchanged(run_cli, tiny_spec, workdir):
    r = run_cli("search", tiny_spec, "--smoke", "--no-transfer")
    assert r.code == 0, r
    run = workdir / "runs" / "tiny-smoke"
    best = yaml.safe_load((run / "best.yaml").read_text())
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 3 and set(trials.state) == {"COMPLETE"}
    assert {"number", "state", "loss", "lr", "init_std", "flops", "seconds", "tokens"} <= set(trials.columns)
    assert best["provenance"]["trial_number"] == int(trials.loc[trials.loss.idxmin(), "number"])
    assert best["provenance"]["loss"] == pytest.approx(trials.loss.min())
    for key in (
        "spec_hash",
        "proxy_width",
        "base_width",
        "parametrization",
        "model_family",
        "versions",
        "search_flops",
    ):
        assert key in best["provenance"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["width"] == 32 and "argv:" in (run / "config.yaml").read_text()

    r = run_cli("transfer", run, "--to", "width=64")
    assert r.code == 0, r
    target = run / "target-width64"
    result = yaml.safe_load((target / "result.yaml").read_text())
    assert result["hparams"] == best["hparams"]  # exactly, every key and every bit
    assert (target / "metrics.csv").is_file() and (target / "checkpoint.pt").is_file()
    assert yaml.safe_load((target / "config.yaml").read_text())["model"]["width"] == 64
    assert result["final_val_loss"] > 0


def test_search_launches_the_target_and_resumes(run_cli, tiny_spec, workdir):
    spec = write_spec(workdir / "t.yaml", {**TINY, "target": {"width": 64}})
    r = run_cli("search", spec)
    assert r.code == 0, r
    run = workdir / "runs" / "tiny"
    assert (run / "target-width64" / "result.yaml").is_file()
    before = pd.read_csv(run / "trials.csv")
    # the same command with a bigger budget continues the study: old trials kept, new ones added
    r = run_cli("search", spec, "search.n_trials=5", "--no-transfer")
    assert r.code == 0, r
    after = pd.read_csv(run / "trials.csv")
    assert list(after.number) == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(after.iloc[:3][["number", "lr", "loss"]], before[["number", "lr", "loss"]])
    assert after.lr.nunique() == 5
    # and a changed spec on the same study is refused with the key named
    r = run_cli("search", spec, "train.steps=9")
    assert r.code == 2 and "train.steps" in r.err


def test_divergent_trial_is_failed_with_reason_and_never_best(run_cli, workdir):
    spec = write_spec(
        workdir / "d.yaml",
        {
            **TINY,
            "search": {"n_trials": 6, "space": {"lr": {"type": "categorical", "choices": [0.003, 10000.0]}}},
        },
    )
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 0, r
    trials = pd.read_csv(workdir / "runs" / "tiny" / "trials.csv")
    bad = trials[trials.lr == 10000.0]
    assert len(bad) and set(bad.state) == {"FAIL"} and bad.fail_reason.str.contains("diverged").all()
    assert set(trials[trials.lr == 0.003].state) == {"COMPLETE"}
    best = yaml.safe_load((workdir / "runs" / "tiny" / "best.yaml").read_text())
    assert best["hparams"]["lr"] == 0.003


def test_all_trials_diverging_exits_1(run_cli, workdir):
    spec = write_spec(
        workdir / "d.yaml",
        {
            **TINY,
            "hparams": {"lr": 1e4},
            "search": {
                "n_trials": 2,
                "space": {"init_std": {"type": "log_uniform", "low": 0.01, "high": 0.1}},
            },
        },
    )
    r = run_cli("search", spec, "--no-transfer")
    assert r.code == 1 and "finite loss" in r.err


def test_dry_run_plans_width_8192_without_allocating(run_cli, tiny_spec, workdir):
    assert run_cli("search", CONFIGS / "quickstart.yaml", "--smoke", "--no-transfer").code == 0
    # a subprocess, so its peak memory is its own: a 1.6B-parameter model would need > 6 GB. On Linux
    # ru_maxrss survives exec (a child spawned by a big pytest process reports the parent's peak),
    # so the child's own high-water mark, VmHWM, is read where /proc has it.
    code = (
        "import os, resource, sys; from mutune.cli import main; "
        "rc = main(['transfer', '--to', 'width=8192', '--dry-run']); "
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')] "
        "if os.path.exists('/proc/self/status') else []; "
        "print('MAXRSS', hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    maxrss_kb = int(p.stdout.split("MAXRSS")[1].split()[0])
    assert maxrss_kb < 1_500_000
    assert "1.6" in p.stdout and "G" in p.stdout  # ~1.6G parameters in the plan
    assert "tuning cost" in p.stdout
    assert not list((workdir / "runs" / "quickstart-smoke").glob("target-*"))


def test_transfer_defaults_to_latest_run_and_spec_target(run_cli, workdir):
    spec = write_spec(workdir / "t.yaml", {**TINY, "target": {"width": 48, "overrides": {"train.steps": 4}}})
    assert run_cli("search", spec, "--no-transfer").code == 0
    r = run_cli("transfer", "--dry-run")
    assert r.code == 0, r
    assert "runs/tiny" in r.err and "target-width48-steps4" in r.out.replace("\n", "")
    assert "does not µTransfer exactly" in r.err  # train.steps changed


BAD_INPUTS = [
    (["search", "tiny.yaml", "train.stepz=3"], "train.stepz"),
    (["search", "tiny.yaml", "train.steps=abc"], "train.steps"),
    (["search", "tiny.yaml", "model.width=0"], "model.width"),
    (["search", "tiny.yaml", "model.width=40"], "model.width"),
    (["search", "tiny.yaml", "data.corpus=text", "data.path=nowhere.txt"], "nowhere.txt"),
    (["search", "tiny.yaml", "search.space.lr.low=0"], "search.space.lr.low"),
    (["search", "missing.yaml"], "missing.yaml"),
    (["search", "tiny.yaml", "--bogus"], "--bogus"),
    (["transfer", "RUN", "--to", "nokey=3"], "nokey"),
    (["transfer", "RUN", "--to", "hparams.lr=1"], "hparams.lr"),
    (["transfer", "RUN", "--to", "model.base_width=64"], "model.base_width"),
    (["transfer", "RUN", "--to", "width=40"], "model.width"),
    (["transfer", "EMPTY", "--to", "width=64"], "best.yaml"),
    (["transfer", "nowhere-dir", "--to", "width=64"], "nowhere-dir"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished search, shared by the error cases."""
    from mutune import config, search

    d = tmp_path_factory.mktemp("run")
    spec = config.spec_from_dict(TINY)
    search.search(spec, run_dir=d / "run", transfer=False, argv=["test"])
    return d / "run"


@pytest.mark.parametrize("argv, names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(argv, names, run_cli, tiny_spec, workdir, finished_run):
    (workdir / "EMPTY").mkdir()  # a run that never finished a trial: config.yaml but no best.yaml
    (workdir / "EMPTY" / "config.yaml").write_text((finished_run / "config.yaml").read_text())
    argv = [str(finished_run) if a == "RUN" else a for a in argv]
    r = run_cli(*argv)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert names in lines[0]
    assert "Traceback" not in r.err + r.out
    assert not (workdir / "runs" / "tiny").exists() or argv[0] == "transfer"


def test_console_script_error_has_no_traceback(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "mutune", "search", "nope.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: nope.yaml: spec file not found"]


def test_help_and_version(run_cli):
    for cmd in (["--help"], ["search", "--help"], ["transfer", "--help"]):
        r = run_cli(*cmd)
        assert r.code == 0 and "Example" in r.out, cmd
    r = run_cli("--version")
    assert r.code == 0 and r.out.startswith("mutune ")
