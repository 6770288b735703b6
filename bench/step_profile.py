"""Where a training step's time goes: cProfile of mutune's trainer and of the plain loop of
bench/throughput.py, same shapes, one process, one thread, denormals flushed (as throughput.py).

Prints each one's timed seconds for steps 11..N and its top functions by own time, so that what
mutune adds per step (parameter groups, the clip by scale group, the µP multipliers) can be read
beside what the kernels take.

    PYTHONPATH=. python bench/step_profile.py               # width 128, 60 steps (about a minute)
    PYTHONPATH=. python bench/step_profile.py --width 512
    PYTHONPATH=. python bench/step_profile.py --quick      # width 64, 14 steps (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (bench/, for its plain loop)

from mutune import config, data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--quick", action="store_true", help="width 64, 14 steps: checks that it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.steps = 64, 14
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    d = {
        "model": {"width": args.width, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
        "train": {
            "steps": args.steps,
            "batch_size": 16,
            "warmup_steps": 5,
            "eval_every": args.steps,
            "eval_batches": 1,
        },
        "hparams": {"lr": 0.004},
    }
    spec = config.spec_from_dict(d)
    corpus = data.load(spec.data).train
    runs = {
        "plain": lambda: throughput.plain_seconds(spec, corpus, args.steps, 10),
        "mutune µP": lambda: throughput.mutune_seconds(spec, 10),
    }
    for name, fn in runs.items():
        fn()  # warm-up run, not profiled
        prof = cProfile.Profile()
        prof.enable()
        seconds = fn()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.top)
        print(f"===== {name}: {seconds:.3f} s for steps 11..{args.steps}")
        print("\n".join(line for line in text.getvalue().splitlines()[6:] if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
