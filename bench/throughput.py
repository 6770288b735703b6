"""Throughput: mutune's training step against a plain nanoGPT-style loop, µP against SP, and what
the search machinery costs around the trials.

1. Step throughput. The same GPT shapes, batch and corpus are trained by ``mutune.train.train``
   (µP at width > base, so every µP multiplier is active, and its SP twin) and by a plain PyTorch
   loop written below (nanoGPT's model and loop: SDPA attention, GELU MLP, pre-LN, AdamW, cosine
   schedule, grad clipping, a loss read every 10 steps). All three run in this process, one after
   the other in rotating order, for several rounds; each measurement times steps 11..N (after
   warm-up, before the final evaluation) and the ratios are medians over rounds.
   Subnormal floats are flushed to zero by default (``--denormals keep`` to measure without): on
   x86 CPUs arithmetic on subnormals takes a slow path, and which variant produces them (SP at
   width 512 with this learning rate does, in its intermediate tensors: its weights and AdamW
   state hold none) would decide the ratios rather than the code. GPUs flush them in effect, so flushed is also the closer figure.
2. Orchestration overhead of a search: (wall - sum of the trials' training seconds) / wall, where a
   trial's seconds are its training loop (``RunResult.seconds``); everything else (building models,
   the Optuna storage, trials.csv and best.yaml after every trial, spawning workers) is overhead.
   Trials per hour with 1 and with 2 worker processes.

    PYTHONPATH=. python bench/throughput.py            # ~10-15 min on 2 CPU cores
    PYTHONPATH=. python bench/throughput.py --quick    # tiny shapes, under a minute
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mutune import config, data, search, train

# ---------------------------------------------------------------------------------------------
# The plain loop (nanoGPT's shape, nothing of mutune's but the corpus bytes)


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.attn = Attention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.c_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, d: int, depth: int, n_head: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq_len, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def plain_seconds(spec: config.Spec, corpus: np.ndarray, steps: int, warm: int) -> float:
    """Seconds for steps warm+1..steps of the plain loop."""
    m, t = spec.model, spec.train
    torch.manual_seed(0)
    model = PlainGPT(256, m.seq_len, m.width, m.depth, m.width // m.head_dim)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.hparams.lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: train.lr_factor(s, t))
    rng = np.random.default_rng(0)
    B, T = t.batch_size, m.seq_len
    t0 = None
    for step in range(1, steps + 1):
        ix = rng.integers(0, len(corpus) - T, size=B)
        x = torch.from_numpy(np.stack([corpus[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([corpus[i + 1 : i + 1 + T] for i in ix]).astype(np.int64))
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if step % 10 == 0:
            loss.item()
        if step == warm:
            t0 = time.perf_counter()
    return time.perf_counter() - t0


def mutune_seconds(spec: config.Spec, warm: int) -> float:
    """Seconds for steps warm+1..steps of mutune's trainer (from its own step logs)."""
    marks: dict[int, float] = {}
    train.train(spec, spec.hparams, on_log=lambda log: marks.__setitem__(log.step, log.elapsed))
    return marks[spec.train.steps] - marks[warm]


def step_bench(width: int, base: int, steps: int, rounds: int, quick: bool) -> dict:
    d = {
        "model": {"width": width, "base_width": base, "depth": 2, "head_dim": 32, "seq_len": 128},
        "train": {
            "steps": steps,
            "batch_size": 16,
            "warmup_steps": 5,
            "eval_every": steps,
            "eval_batches": 1,
        },
        "hparams": {"lr": 0.004},
    }
    if quick:
        d["model"].update(head_dim=16, seq_len=32)
        d["train"]["batch_size"] = 4
    mup = config.spec_from_dict(d)
    sp = config.spec_from_dict(d, ["model.parametrization=sp"])
    corpus = data.load(mup.data).train
    warm = 10
    tokens = (steps - warm) * mup.train.batch_size * mup.model.seq_len
    runs = {
        "plain": lambda: plain_seconds(mup, corpus, steps, warm),
        "mup": lambda: mutune_seconds(mup, warm),
        "sp": lambda: mutune_seconds(sp, warm),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(rounds):
        for k in order[r % 3 :] + order[: r % 3]:  # rotate, so no variant always runs first
            times[k].append(runs[k]())
    ratio_plain = [p / m for p, m in zip(times["plain"], times["mup"], strict=True)]
    ratio_sp = [m / s - 1 for m, s in zip(times["mup"], times["sp"], strict=True)]
    return {
        "width": width,
        "base": base,
        "tokens_per_s": {k: tokens / statistics.median(v) for k, v in times.items()},
        "mutune_vs_plain": statistics.median(ratio_plain),
        "mutune_vs_plain_range": (min(ratio_plain), max(ratio_plain)),
        "mup_overhead": statistics.median(ratio_sp),
        "mup_overhead_range": (min(ratio_sp), max(ratio_sp)),
    }


def search_bench(n_trials: int, workers: int, quick: bool) -> dict:
    d = {
        "name": f"throughput-w{workers}",
        "model": {"width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 128},
        "train": {"steps": 200, "batch_size": 16, "warmup_steps": 20, "eval_every": 50, "eval_batches": 8},
        "search": {"n_trials": n_trials},
    }
    if quick:
        d["model"].update(width=32, base_width=32, head_dim=16, seq_len=32)
        d["train"].update(steps=20, batch_size=4, warmup_steps=2, eval_every=10, eval_batches=2)
    spec = config.spec_from_dict(d)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        search.search(spec, run_dir=Path(tmp) / "run", transfer=False, workers=workers, argv=["bench"])
        wall = time.perf_counter() - t0
        trials = pd.read_csv(Path(tmp) / "run" / "trials.csv")
    busy = float(trials.seconds.sum())
    return {
        "workers": workers,
        "trials": len(trials),
        "wall": wall,
        "trial_seconds": busy,
        "overhead": (wall * workers - busy) / (wall * workers),
        "trials_per_hour": len(trials) / wall * 3600,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few rounds: a correctness run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the step benchmark")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument(
        "--denormals",
        choices=["flush", "keep"],
        default="flush",
        help="flush: subnormal floats become zero (what GPUs do in effect), so the step times measure "
        "the code and not the x86 slow path for subnormals; keep: the CPU's default",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.denormals == "flush" and not torch.set_flush_denormal(True):
        print("# this CPU cannot flush denormals; running with them kept")
    cmd = "PYTHONPATH=. python bench/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# {cmd}")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"denormals {args.denormals}"
    )
    if args.quick:
        shapes, steps, rounds, n_trials = [(64, 32)], 20, args.rounds or 2, 3
    else:
        shapes, steps, rounds, n_trials = [(128, 64), (512, 64)], 60, args.rounds or 5, 8
    ok = True
    for width, base in shapes:
        r = step_bench(width, base, steps, rounds, args.quick)
        tps = ", ".join(f"{k} {v:,.0f}" for k, v in r["tokens_per_s"].items())
        lo, hi = r["mutune_vs_plain_range"]
        print(f"width {width} (base {base}), {rounds} rounds of {steps - 10} timed steps: tokens/s {tps}")
        print(
            f"  mutune µP / plain loop: {r['mutune_vs_plain']:.3f} (range {lo:.3f}..{hi:.3f}; target >= 1.0)"
        )
        lo, hi = r["mup_overhead_range"]
        print(f"  µP time over SP: {r['mup_overhead']:+.1%} (range {lo:+.1%}..{hi:+.1%}; target <= +2%)")
        ok &= r["mutune_vs_plain"] >= 1.0 and r["mup_overhead"] <= 0.02
    for workers in (1, 2):
        s = search_bench(n_trials, workers, args.quick)
        print(
            f"search, {workers} worker(s): {s['trials']} trials in {s['wall']:.1f}s wall, "
            f"{s['trial_seconds']:.1f}s of training; overhead {s['overhead']:.1%} (target <= 3% for 1 worker); "
            f"{s['trials_per_hour']:.0f} trials/hour"
        )
        if workers == 1:
            ok &= s["overhead"] <= 0.03
    print("targets:", "all met" if ok else "some missed (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
