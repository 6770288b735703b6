"""How the thread count changes a search's speed (and its numbers): the quickstart's proxy trials at each
count, alternating, in fresh processes.

Each round runs ``mutune search configs/quickstart.yaml --no-transfer search.n_trials=N --threads T``
into a fresh run dir for every T of ``--threads`` (alternating within the round, so that the machine's
load hits every count alike) and reads, per trial, the seconds trials.csv records, and for the whole
process the wall and CPU seconds. It also reports trial 0's loss at each count: the count changes the
order of float sums, so the losses differ in their last digits (which is why config.yaml records it).
The load average before and after is printed: on a machine shared with other work, say so with the
figures.

Also the README's claim, with ``--readme``: the set-up's whole command (16 trials and the width-256
target) once, timed.

    PYTHONPATH=. python bench/threads.py                      # threads 1 and 2, 3 rounds of 4 trials
    PYTHONPATH=. python bench/threads.py --readme             # + the README set-up command, timed
    PYTHONPATH=. python bench/threads.py --quick              # 1 round of 1 trial (checks it runs)
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "configs" / "quickstart.yaml"


def run(args: list[str], cwd: Path) -> tuple[float, float]:
    """``mutune ARGS`` in a fresh process: (wall seconds, CPU seconds of the process and its children)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # --threads decides, not the shell
    env.update(PYTHONPATH=str(ROOT), CI="true")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "mutune", "-q", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"mutune {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def trials(run_dir: Path) -> list[dict]:
    with (run_dir / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated counts (default 1,2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--readme", action="store_true", help="also time the README's set-up command once")
    ap.add_argument("--quick", action="store_true", help="1 round of 1 trial at each count")
    a = ap.parse_args()
    counts = [int(t) for t in a.threads.split(",")]
    rounds, n = (1, 1) if a.quick else (a.rounds, a.trials)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    per_trial: dict[int, list[float]] = {t: [] for t in counts}
    walls: dict[int, list[float]] = {t: [] for t in counts}
    cpus: dict[int, list[float]] = {t: [] for t in counts}
    first_loss: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(rounds):
            for t in counts:
                run_dir = tmp / f"t{t}-r{r}"
                args = ["search", str(SPEC), "--no-transfer", f"search.n_trials={n}", "--threads", str(t)]
                wall, cpu = run([*args, "--run-dir", str(run_dir)], tmp)
                rows = trials(run_dir)
                assert all(int(row["threads"]) == t for row in rows), rows  # what the trials recorded
                per_trial[t] += [float(row["seconds"]) for row in rows]
                walls[t].append(wall)
                cpus[t].append(cpu)
                first_loss[t] = rows[0]["loss"]
        print(f"\nquickstart proxy trials (width 64, 200 steps), {rounds} round(s) of {n}, alternating:")
        print(
            f"{'threads':>8} {'trial s (median)':>17} {'process wall s':>15} {'process CPU s':>14} {'trial 0 loss':>20}"
        )
        for t in counts:
            print(
                f"{t:>8} {statistics.median(per_trial[t]):>17.2f} {statistics.median(walls[t]):>15.1f} "
                f"{statistics.median(cpus[t]):>14.1f} {first_loss[t]:>20}"
            )
        if a.readme and not a.quick:
            wall, cpu = run(["search", str(SPEC), "--run-dir", str(tmp / "readme")], tmp)
            threads = next(
                line
                for line in (tmp / "readme" / "config.yaml").read_text().splitlines()
                if "threads:" in line
            )
            print(
                f"\nREADME set-up, `mutune search configs/quickstart.yaml` ({threads.strip()}): {wall:.0f} s wall, {cpu:.0f} s CPU"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
