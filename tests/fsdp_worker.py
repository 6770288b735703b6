"""Run under torchrun by tests/test_fsdp.py (2 processes, gloo): what a sharded run looks like inside.

For AdamW and for Muon + AdamW: the model is built on meta, sharded and initialised shard by shard;
every parameter is a DTensor holding part of its rows; its gathered weights are compared with the
one-process init; a few steps are trained; then each param group's LR and lr_mult are recorded, the
LR-ratio guard run, and run again after a deliberate collapse of the group LRs (it must refuse).
Each rank writes <out>/rank<R>.json; the test asserts on those.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from mutune import config, data, models
from mutune.mup import optim
from mutune.train import build, init_distributed, teardown, train_step

SPEC = {
    "name": "fsdp",
    "model": {
        "width": 64,
        "base_width": 32,
        "depth": 2,
        "head_dim": 16,
        "seq_len": 16,
        "zero_init_query": True,
    },
    "train": {"steps": 20, "batch_size": 4, "warmup_steps": 2, "parallel": "fsdp", "device": "cpu"},
    "hparams": {"lr": 0.01, "weight_decay": 0.1},
}


def inspect(optimizer: str, world, device) -> dict:
    spec = config.spec_from_dict({**SPEC, "train": {**SPEC["train"], "optimizer": optimizer}})
    run = build(spec, spec.hparams, world, device)
    reference, _ = models.create(spec, spec.hparams, data.vocab_size(spec.data), "cpu")
    ref = dict(reference.named_parameters())
    params = {}
    for name, p in run.model.named_parameters():
        full = p.full_tensor()
        params[name] = {
            "dtensor": isinstance(p, DTensor),
            "placements": [str(pl) for pl in p.placements] if isinstance(p, DTensor) else [],
            "global_rows": p.shape[0],
            "local_rows": p.to_local().shape[0] if isinstance(p, DTensor) else p.shape[0],
            "init_max_diff": (full - ref[name]).abs().max().item(),
        }
    for _ in range(3):
        train_step(run)
    groups = [
        {
            "kind": g["kind"],
            "names": g["names"],
            "lr": g["lr"],
            "lr_mult": g["lr_mult"],
            "dtensors": all(isinstance(p, DTensor) for p in g["params"]),
        }
        for g in run.opt.param_groups
    ]
    optim.check_param_groups(run.opt)  # the schedule kept the ratios
    for g in run.opt.param_groups:  # what OneCycleLR(max_lr=float) would do
        g["lr"] = 0.01
    try:
        optim.check_param_groups(run.opt)
        caught = ""
    except optim.MuPError as e:
        caught = str(e)
    return {"rank": world.rank, "world": world.world, "params": params, "groups": groups, "guard": caught}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    world, device = init_distributed("cpu")
    try:
        results = {opt: inspect(opt, world, device) for opt in ("adamw", "muon")}
        (out / f"rank{world.rank}.json").write_text(json.dumps(results))
    finally:
        teardown(world)
