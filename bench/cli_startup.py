"""How long the everyday commands take to answer: this checkout against a reference commit, side by side.

Each command runs as a fresh process (``python -m mutune ...``, what a user's shell does), the
reference (default: the commit before the lazy CLI, 2c4daa2) and this checkout alternating within
each round, so that the machine's load hits both alike; the figures are medians over rounds and the
ratio this/reference. Two floors are measured the same way: a bare interpreter, and ``import torch``
(what every command paid before).

Target, stated before running: every command here answers in at most half the reference's time, and
in less time than ``import torch`` alone.

    PYTHONPATH=. python bench/cli_startup.py             # 7 rounds, ~1-2 min on 2 idle cores
    PYTHONPATH=. python bench/cli_startup.py --quick     # 1 round against HEAD (checks it runs)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "2c4daa2"  # main before this change: every command imported torch, Optuna and all commands


def commands(tmp: Path) -> dict[str, list[str]]:
    spec = str(ROOT / "configs" / "quickstart.yaml")
    return {
        "mutune --help": ["--help"],
        "mutune transfer --help": ["transfer", "--help"],
        "mutune show-config quickstart.yaml": ["show-config", spec],
        "mutune init x.yaml --force": ["init", str(tmp / "x.yaml"), "--force"],
        "mutune search (missing argument)": ["search"],
    }


def checkout(ref: str, into: Path) -> Path | None:
    """The reference's mutune/ package, unpacked from git into ``into``; None without git or the commit."""
    archive = into / "ref.tar"
    with archive.open("wb") as f:
        p = subprocess.run(["git", "archive", ref, "mutune"], cwd=ROOT, stdout=f, stderr=subprocess.PIPE)
    if p.returncode != 0:
        print(f"reference {ref} not available ({p.stderr.decode().strip()}); measuring this checkout only")
        return None
    with tarfile.open(archive) as t:
        try:
            t.extractall(into / "ref", filter="data")
        except TypeError:  # Python before 3.10.12 / 3.11.4: no extraction filters (our own git archive)
            t.extractall(into / "ref")
    return into / "ref"


def timed(args: list[str], pythonpath: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "CI": "true", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round against HEAD")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ref", default=None, help=f"reference commit (default {REFERENCE}; HEAD with --quick)")
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    ref = a.ref or ("HEAD" if a.quick else REFERENCE)
    print("target: each command at most 0.5x the reference's time, and below `import torch` alone")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ref_path = checkout(ref, tmp)
        cmds = commands(tmp)
        floors = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"]}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for name, args in floors.items():
                times.setdefault((name, "floor"), []).append(timed(args, ROOT, tmp))
            for name, args in cmds.items():
                for side, path in (("ref", ref_path), ("this", ROOT)):
                    if path is not None:
                        times.setdefault((name, side), []).append(timed(["-m", "mutune", *args], path, tmp))
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_floor = med[("python -c 'import torch'", "floor")]
    print(f"\nmedian of {rounds} round(s), seconds (reference {ref})")
    for name in floors:
        print(f"  {name:<36} {med[(name, 'floor')]:7.2f}")
    print(f"  {'command':<36} {'ref':>7} {'this':>7} {'this/ref':>9}  target")
    missed = []
    for name in cmds:
        this, before = med[(name, "this")], med.get((name, "ref"))
        ok = this < torch_floor and (before is None or this <= 0.5 * before)
        if not ok:
            missed.append(name)
        ratio = f"{this / before:9.2f}" if before else f"{'-':>9}"
        ref_s = f"{before:7.2f}" if before else f"{'-':>7}"
        print(f"  {name:<36} {ref_s} {this:7.2f} {ratio}  {'met' if ok else 'MISSED'}")
    if missed:
        print(f"target missed for: {', '.join(missed)}")
    else:
        print("target met for every command")


if __name__ == "__main__":
    main()
