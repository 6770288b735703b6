"""The unit-scale check, for a parametrization that promises it (u-µP): at initialisation every
activation, and the gradient of the loss with respect to it, has RMS near 1, at every width.

One forward and backward pass per width and seed, at init, on the coord check's batch: the RMS of
the output of every module that holds parameters, and of every block, and of the gradient arriving
at each. A value outside [1/f, f] (f = ``Parametrization.unit_rms``) fails, naming the module. The
readout's output (the logits) is exempt: its 1/fan_in forward scale (µP's 1/m at unit scale) makes it
shrink like width^-1/2 by design, the same exemption the slope check makes at t = 0.

Measured on quickstart --smoke under u-µP (widths 32 to 256): activations 0.06 (the logits) and
0.97 to 2.25 elsewhere, gradients 0.43 to 3.56 (the position table's, which sums over the batch); a
missing 1/√fan_in on a hidden linear puts its output at √fan_in (5.7 at width 32, and growing), a
σ = 0.05 init puts the linears' outputs near 0.05: both far outside f = 4.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from .. import data, models
from ..config import HParams, Spec


def _watched(model: nn.Module, readouts: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """Every module holding parameters, and every block (a child of a ModuleList), but the readouts."""
    blocks = {id(c) for m in model.modules() if isinstance(m, nn.ModuleList) for c in m}
    out = []
    for name, mod in model.named_modules():
        if not name or any(name == r or name.startswith(r + ".") for r in readouts):
            continue
        if id(mod) in blocks or next(mod.parameters(recurse=False), None) is not None:
            out.append((name, mod))
    return out


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def unit_scales(
    spec: Spec, hp: HParams, width: int, seed: int, batch: tuple[torch.Tensor, torch.Tensor]
) -> list[dict]:
    """One row per watched module: the RMS of its output and of the gradient arriving at it, at init."""
    model, _ = models.create(spec, hp, data.vocab_size(spec.data), batch[0].device, seed=seed)
    rows: dict[str, dict] = {}
    handles = []

    def hook(name: str):
        def record(mod: nn.Module, args: tuple, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.requires_grad:
                rows[name] = {"width": width, "seed": seed, "layer": name, "x_rms": _rms(out)}
                out.register_hook(lambda g: rows[name].__setitem__("grad_rms", _rms(g)))

        return record

    readouts = tuple(getattr(model, "_mutune_readouts", ())) or models.readout_names(spec)
    for name, mod in _watched(model, readouts):
        handles.append(mod.register_forward_hook(hook(name)))
    try:
        _, loss = model(*batch)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    return list(rows.values())


def verdict(rows: pd.DataFrame, tolerance: float) -> list[str]:
    """One line per (module, measure) outside [1/tolerance, tolerance] at some width or seed, its
    worst value, the worst first."""
    worst: dict[tuple[str, str], tuple[float, str]] = {}
    for col, what in (("x_rms", "output"), ("grad_rms", "gradient")):
        for layer, width, value in zip(rows.layer, rows.width, rows.get(col, []), strict=False):
            if value == value and not (1 / tolerance <= value <= tolerance):  # (NaN: no gradient reached it)
                off = abs(math.log(value)) if value > 0 else math.inf
                line = f"{layer} {what} RMS {value:.3g} at width {width} (unit scale: within ×{tolerance:g} of 1)"
                if off > worst.get((layer, what), (-1.0, ""))[0]:
                    worst[(layer, what)] = (off, line)
    return [line for _, line in sorted(worst.values(), key=lambda x: -x[0])]
