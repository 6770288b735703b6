"""Coord-check margins: correct µP against deliberate violations, on the gate's and the full check's widths.

For each model and each violation, runs the coord check's recording (the same code as
``mutune coord-check``) and applies the verdict, then prints per case the verdict and the row that
came closest to its limit (µP: how much room is left; a violation: by how much its strongest
signal clears the limit). The violations are injected in-process:

- each AdamW LR class (embedding and input weights, hidden, readout, vector = norm gains and
  biases) divided by m and multiplied by m, by editing the rule table (the registered µP parametrization's, ``tests/violations.py``);
- the readout multiplier left out (α_out instead of α_out/m);
- 1/√d_head attention with a fixed number of heads (the head dim grows with width): for the
  built-in GPT through the parametrization, for the model styles of tests/violations.py (attention
  written by hand, over T + 3 tokens, Hugging Face's eager way, in renamed classes, from raw and
  fused q/k/v parameters) through their own ``scale="sqrt"``. For these the report also says where
  the violation shows most: its attention scale × head dim (read exactly) against its logits.

Targets (stated before the runs): on the gate's widths and seeds (base × 1, 2, 4, 8, 2 seeds),
every correct µP model passes with its closest row at most 80% of its limit, and every violation
fails with its strongest row at least 1.25× its limit; on the full check's (× 1..16, 3 seeds)
the same, with more room.

    PYTHONPATH=. python bench/coord_margins.py                 # ~15-30 min on 2 CPU cores
    PYTHONPATH=. python bench/coord_margins.py --report-only   # re-apply the limits to saved records
    PYTHONPATH=. python bench/coord_margins.py --quick         # two cases, seconds

Records are saved per case under --out (default runs/coord_margins/, 12 MB), so a rerun only
computes the missing cases; the verdict table goes to bench/figures/coord_margins.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

import pandas as pd

from mutune import checks, config, models
from mutune.checks import verdict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.factory_models, tests.violations
from tests.violations import LR_CLASSES, violation  # noqa: E402

TRAIN = {"steps": 10, "batch_size": 8, "warmup_steps": 2}  # (the coord check reads no schedule)
GPT = {"family": "gpt", "width": 64, "base_width": 64, "depth": 2, "head_dim": 32, "seq_len": 64}
MODELS = {
    "gpt": GPT,  # configs/quickstart.yaml's model
    "gpt-bias": {**GPT, "bias": True},  # biases: vector-like parameters in every Linear
    "gpt-2heads": {**GPT, "head_dim": None, "n_head": 2},  # the head dim grows with width
    "mlp": {"family": "mlp", "width": 64, "base_width": 64, "depth": 3, "seq_len": 8},
    "nanogpt": {
        "family": "factory",
        "factory": "tests.factory_models:nanogpt",
        "width": 64,
        "base_width": 64,
        "seq_len": 64,
    },
    "bmm-postln": {
        "family": "factory",
        "factory": "tests.factory_models:bmm_fixed_head_dim",
        "width": 64,
        "base_width": 64,
        "seq_len": 64,
    },
    "hf-llama": {
        "family": "factory",
        "factory": "tests.factory_models:hf_llama",
        "width": 64,
        "base_width": 64,
        "seq_len": 64,
    },
}
# tests/violations.py's attention styles (two heads at every width): correct, and with 1/√d_head
STYLES = {
    "manual": "manual_softmax",
    "register": "register_tokens",
    "eager": "eager_hf",
    "renamed": "renamed",
    "raw": "raw_params",
    "fused": "fused_qkv",
}
for _name, _fn in STYLES.items():
    MODELS[_name] = {
        "family": "factory",
        "factory": f"tests.model_styles:{_fn}",
        "width": 64,
        "base_width": 64,
        "seq_len": 64,
    }
VIOLATIONS = (
    ["mup"]
    + [f"{role}{op}m" for role in LR_CLASSES for op in ("/", "*")]
    + ["no_readout_mult", "sqrt_attention"]
)
MODES = {"gate": (checks.GATE_MULTS, 2), "full": (checks.DEFAULT_MULTS, 3)}


def applies(model: str, name: str) -> bool:
    """1/√d attention is a violation only where the head dim grows; the MLP has no norms or biases
    (no vector class); nanoGPT's readout is tied to the embedding, so it has no LR class of its own;
    the attention styles are run correct, with 1/√d attention and without the readout's 1/m."""
    if model in STYLES:
        return name in ("mup", "sqrt_attention", "no_readout_mult")
    if name == "sqrt_attention":
        return model == "gpt-2heads"
    if name.startswith("vector"):
        return model != "mlp"
    if name.startswith("readout"):
        return model != "nanogpt"
    return True


def collect(model: str, name: str, mode: str, out: Path) -> pd.DataFrame:
    path = out / f"{model}_{name.replace('/', 'div').replace('*', 'mul')}_{mode}.csv"
    if path.exists():
        return pd.read_csv(path)
    m = MODELS[model]
    style_sqrt = model in STYLES and name == "sqrt_attention"
    if style_sqrt:  # the model's own 1/√d_head (the parametrization's seam is the built-in GPT's)
        m = {**m, "factory_kwargs": {"scale": "sqrt"}}
    spec = config.spec_from_dict({"name": "m", "model": m, "train": TRAIN})
    mults, seeds = MODES[mode]
    widths = [spec.model.base_width * k for k in mults]
    hp = dataclasses.replace(spec.hparams, lr=checks.default_lr(spec))
    seq_len = models.family(spec).coord_seq_len(spec, 16)  # as checks.coord_check does
    t0 = time.perf_counter()
    with violation("mup" if style_sqrt else name):
        df, problems, missing = checks.records(spec, hp, widths, seeds, 5, seq_len, 2)
    print(f"  {model:10s} {name:16s} {mode}: {time.perf_counter() - t0:5.1f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def judge(df: pd.DataFrame, limits: dict[str, float]) -> dict:
    s = verdict.slopes(df, limits)
    g = verdict.gated(s).dropna(subset=["slope"])
    ratio = g.slope.abs() / g.limit
    i = ratio.idxmax()
    r = g.loc[i]
    out = {
        "verdict": "fail" if (s.status == "fail").any() else "pass",
        "ratio": float(ratio.max()),
        "row": f"{r.layer} {r.metric} t={r.t} slope {r.slope:+.2f} (limit {r.limit:g})",
    }
    logits = g[g.kind == "attn_logits"]
    if len(logits):  # where an attention violation shows on the logits themselves (not its scale)
        lr_ = (logits.slope.abs() / logits.limit).idxmax()
        q = g.loc[lr_]
        out["attn_logits_ratio"] = float(abs(q.slope) / q.limit)
        out["attn_logits_row"] = f"{q.layer} {q.metric} t={q.t} slope {q.slope:+.2f} (limit {q.limit:g})"
    return out


def report(rows: list[dict], path: Path | None) -> None:
    df = pd.DataFrame(rows)
    if path is not None and not df.empty:
        if path.exists():  # a run of some models replaces their rows and keeps the others'
            old = pd.read_csv(path)
            done = set(zip(df.model, df.case, df["mode"], strict=True))
            old = old[[k not in done for k in zip(old.model, old.case, old["mode"], strict=True)]]
            df = pd.concat([old, df], ignore_index=True)
        df.to_csv(path, index=False, float_format="%.3f")
        df = pd.DataFrame(rows)
    for mode in MODES:
        d = df[df["mode"] == mode]
        if d.empty:
            continue
        mults, seeds = MODES[mode]
        print(f"\n{mode}: widths base x {','.join(map(str, mults))}, {seeds} seeds")
        print(f"{'model':10s} {'case':16s} {'verdict':7s} {'ratio':>6s}  closest / strongest row")
        for r in d.itertuples():
            print(f"{r.model:10s} {r.case:16s} {r.verdict:7s} {r.ratio:6.2f}  {r.row}")
        sqrt = d[(d.case == "sqrt_attention")]
        if len(sqrt) and "attn_logits_ratio" in sqrt:
            print(
                f"1/√d attention, where it shows most: its scale × head dim at {sqrt.ratio.min():.2f}..{sqrt.ratio.max():.2f} "
                f"of its limit; its logits at {sqrt.attn_logits_ratio.min():.2f}..{sqrt.attn_logits_ratio.max():.2f}"
            )
        mup = d[d.case == "mup"]
        bad = d[d.case != "mup"]
        worst_mup, weakest = mup.ratio.max(), bad.ratio.min()
        target = "met" if worst_mup <= 0.8 and weakest >= 1.25 else "MISSED"
        wrong = list(mup[mup.verdict == "fail"].model) + list(
            bad[bad.verdict == "pass"].model + ":" + bad[bad.verdict == "pass"].case
        )
        print(
            f"{mode}: correct µP closest at {worst_mup:.2f} of its limit (target <= 0.80); weakest violation "
            f"at {weakest:.2f} (target >= 1.25): {target}" + (f"; wrong verdicts: {wrong}" if wrong else "")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two cases on the gate's widths (CI)")
    ap.add_argument("--report-only", action="store_true", help="only re-judge saved records")
    ap.add_argument("--out", type=Path, default=Path("runs") / "coord_margins")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="gate,full")
    args = ap.parse_args()
    models = args.models.split(",")
    if importlib.util.find_spec("transformers") is None and "hf-llama" in models:
        print("transformers is not installed: hf-llama left out")
        models.remove("hf-llama")
    cases = [
        (m, v, mode) for mode in args.modes.split(",") for m in models for v in VIOLATIONS if applies(m, v)
    ]
    if args.quick:
        cases = [("gpt", "mup", "gate"), ("gpt", "embedding/m", "gate")]
    print(f"limits: {verdict.LIMITS}; {len(cases)} cases")
    rows = []
    for model, name, mode in cases:
        path = args.out / f"{model}_{name.replace('/', 'div').replace('*', 'mul')}_{mode}.csv"
        if args.report_only and not path.exists():
            continue
        df = collect(model, name, mode, args.out)
        rows.append({"model": model, "case": name, "mode": mode, **judge(df, verdict.LIMITS)})
    report(rows, None if args.quick else ROOT / "bench" / "figures" / "coord_margins.csv")


if __name__ == "__main__":
    main()
