"""Optimizers under µP: param groups from the rule table, the torch constructors, the LR-ratio guard.

Every parameter gets the rule of the kind its optimizer maps it to (:mod:`mutune.mup.optimizers`:
AdamW -> ``adam`` for all, SGD -> ``sgd``); parameters with the same (kind, LR, weight decay, ε)
multipliers share a group, and each group carries ``lr_mult`` so that a schedule scaling every
group's LR *relatively* keeps µP (``LambdaLR`` does), and :func:`check_param_groups` can prove it.

The hyperparameters are read from any object with the attributes an optimizer uses (``lr``,
``weight_decay``, ``beta1``, ``beta2``, ``momentum``): the spec's ``HParams`` is one. This module
imports nothing of the spec; an unknown optimizer is a plain ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from .optimizers import OPTIMIZERS, OptimizerEntry
from .optimizers import get as entry
from .parametrizations import Parametrization, resolve
from .shapes import ParamInfo


class OptimizerHParams(Protocol):
    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    momentum: float


class MuPError(RuntimeError):
    """µP was defeated at run time (e.g. a scheduler overwrote the per-group learning rates)."""


__all__ = ["OPTIMIZERS", "OptimizerEntry", "entry"]


def param_groups(
    model: nn.Module,
    infos: dict[str, ParamInfo],
    hp: OptimizerHParams,
    parametrization: Parametrization | str,
    optimizer: str,
    *,
    eps: float = 1e-8,
    depth_alpha: float = 1.0,
) -> list[dict]:
    """Optimizer param groups, one per distinct (kind, LR, weight decay, ε) treatment.

    Each group carries ``lr_mult`` and its ``lr`` is ``hp.lr * lr_mult``; schedules must scale
    group LRs relatively (``LambdaLR`` does), never set one absolute LR on all groups. ``kind`` says
    which rule (and, for a combined optimizer, which torch optimizer) the group belongs to;
    ``clip_scale`` how its gradient norm counts towards clipping (:func:`clip_grad_norm_`).
    """
    opt, rules = entry(optimizer), resolve(parametrization)
    params = dict(model.named_parameters())
    groups: dict[tuple[str, float, float, float, float], dict] = {}
    for name, info in infos.items():
        kind = opt.kind(info.role, len(info.shape))
        lr_mult, wd_mult, eps_mult = rules.scaling(info, kind, depth_alpha)
        clip = rules.clip_scale(info)
        key = (kind, lr_mult, wd_mult, eps_mult, clip)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "params": [],
                "names": [],
                "roles": set(),
                "kind": kind,
                "lr": hp.lr * lr_mult,
                "lr_mult": lr_mult,
                "weight_decay": _decay(hp, lr_mult, wd_mult, rules.independent_weight_decay),
                "clip_scale": clip,
            }
            if kind == "adam":
                g["eps"] = eps * eps_mult
        g["params"].append(params[name])
        g["names"].append(name)
        g["roles"].add(info.role)
    out = []
    for g in groups.values():
        g["roles"] = sorted(g["roles"])
        out.append(g)
    return out


def _decay(hp: OptimizerHParams, lr_mult: float, wd_mult: float, independent: bool) -> float:
    """A group's weight decay: λ·(its multiplier); independent of the LR (u-µP, unit_scaling's
    ``independent_weight_decay``): λ / (its peak LR), so that PyTorch's per-step decay lr·λ is λ."""
    if independent and wd_mult:
        return hp.weight_decay * wd_mult / (hp.lr * lr_mult)
    return hp.weight_decay * wd_mult


def grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The global gradient norm with every group's norm rescaled to the base width (each group's
    ``clip_scale``, :meth:`~mutune.mup.parametrizations.Parametrization.clip_scale`):
    the same number at every width for the same training state under µP (bench/grad_clip_width.py)."""
    by_scale: dict[float, list[torch.Tensor]] = {}
    for g in optimizer.param_groups:
        grads = [p.grad for p in g["params"] if p.grad is not None]
        by_scale.setdefault(g.get("clip_scale", 1.0), []).extend(grads)
    norms = [
        _full(torch.nn.utils.get_total_norm(grads)) * scale for scale, grads in by_scale.items() if grads
    ]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def _full(norm: torch.Tensor) -> torch.Tensor:
    """Sharded (FSDP2) gradients' norm is a DTensor holding this rank's part: the whole norm, one
    reduction per scale group."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def clip_grad_norm_(model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip every gradient by one factor, min(1, max_norm / norm), where the norm is
    :func:`grad_norm`: a fixed ``max_norm`` then clips the same steps of the proxy and the target.

    (The plain global norm falls with width under µP, 0.48, 0.28 and 0.17 at widths 64, 256 and
    1024 after 5 steps, so a threshold that clips the proxy leaves the target unclipped.) When every
    scale is 1 (the base width, SP) this is exactly ``torch.nn.utils.clip_grad_norm_``.
    """
    if all(g.get("clip_scale", 1.0) == 1.0 for g in optimizer.param_groups):
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    total = grad_norm(optimizer)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if any(hasattr(x, "full_tensor") for x in grads):  # a DTensor times a plain tensor is refused
        coef = coef.item()  # so the factor as a number: one sync per step, not one per parameter
        for x in grads:
            x.mul_(coef)
    elif grads:  # one fused call per device (as torch's own clipping), the same products as one by one
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for x in grads:
            by_device.setdefault(x.device, []).append(x)
        for device, xs in by_device.items():
            torch._foreach_mul_(xs, coef.to(device))
    return total


def make_optimizer(groups: list[dict], hp: OptimizerHParams, optimizer: str) -> torch.optim.Optimizer:
    """The registered optimizer's torch constructor over mutune's param groups."""
    return entry(optimizer).build(groups, hp)


def build_adamw(groups: list[dict], hp: OptimizerHParams) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2))


def build_sgd(groups: list[dict], hp: OptimizerHParams) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the hidden matrices and AdamW for everything else, stepped as one optimizer.

    Its ``param_groups`` are the two optimizers' own group dicts, so one ``LambdaLR`` schedules both,
    and :func:`check_param_groups` sees every group's ``lr_mult``; its state dict holds both.
    """

    def __init__(self, groups: list[dict], hp: OptimizerHParams):
        muon = [g for g in groups if g["kind"] == "muon"]
        adam = [g for g in groups if g["kind"] != "muon"]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if muon:  # Nesterov momentum as in Keller Jordan's Muon; the decay is set per group (not torch's 0.1)
            self.optimizers["muon"] = torch.optim.Muon(
                muon, lr=hp.lr, momentum=hp.momentum, weight_decay=0.0, adjust_lr_fn="match_rms_adamw"
            )
        if adam:
            self.optimizers["adamw"] = build_adamw(adam, hp)
        super().__init__(groups, {})  # the same dicts, not copies: one schedule drives both
        # where each of our groups lives, to share the dicts again after a load (which replaces them)
        index = {id(g): ("muon", i) for i, g in enumerate(muon)}
        index.update({id(g): ("adamw", i) for i, g in enumerate(adam)})
        self._where = [index[id(g)] for g in groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state_dict[name])
        self.share_groups()

    def share_groups(self) -> None:
        """After a load (torch's ``load_state_dict`` gives each optimizer new group dicts), share them
        again, or the schedule would go on setting LRs that the optimizers no longer read."""
        self.param_groups[:] = [self.optimizers[name].param_groups[i] for name, i in self._where]


def build_muon(groups: list[dict], hp: OptimizerHParams) -> torch.optim.Optimizer:
    return MuonWithAdamW(groups, hp)


# torch optimizers whose update the rules describe (Adam-like: entrywise normalised; SGD-like; Muon)
COVERED_OPTIMIZERS: tuple[type, ...] = (
    torch.optim.AdamW,
    torch.optim.Adam,
    torch.optim.SGD,
    torch.optim.Muon,
    MuonWithAdamW,
)


def check_param_groups(optimizer: Any, rtol: float = 1e-6) -> None:
    """Verify, at any point in training, that the optimizer still applies the µP LR ratios.

    Every group from :func:`param_groups` carries ``lr_mult``; µP holds while ``lr / lr_mult`` is
    the same for all groups (a relative schedule such as ``LambdaLR`` keeps it so). A scheduler or
    user code that sets one absolute LR on every group (``OneCycleLR(max_lr=0.01)``, a loop doing
    ``g["lr"] = lr``) collapses the ratios and turns µP into SP without an error; this raises
    :class:`MuPError` instead. Also refuses optimizers the rules do not cover.
    """
    if not isinstance(optimizer, COVERED_OPTIMIZERS):
        raise MuPError(
            f"{type(optimizer).__name__} is not covered by the µP rules (AdamW/Adam, SGD or Muon); "
            "its per-group LRs would not give µP"
        )
    groups = optimizer.param_groups
    missing = [i for i, g in enumerate(groups) if "lr_mult" not in g]
    if missing:
        raise MuPError(
            f"param group {missing[0]} has no lr_mult: it was not built by mutune (mutune.optim.param_groups or mutune.parametrize)"
        )
    base = [g["lr"] / g["lr_mult"] for g in groups]
    ref = base[0]
    for g, b in zip(groups, base, strict=True):
        if abs(b - ref) > rtol * max(abs(ref), abs(b), 1e-30):
            first = groups[0]
            raise MuPError(
                f"param group LRs no longer follow their µP multipliers: lr={g['lr']:.4g} for lr_mult="
                f"{g['lr_mult']:.4g} but lr={first['lr']:.4g} for lr_mult={first['lr_mult']:.4g} "
                f"(ratio {g['lr'] / first['lr']:.4g}, expected {g['lr_mult'] / first['lr_mult']:.4g}); "
                "something set one absolute LR on all groups (e.g. OneCycleLR(max_lr=float)): "
                "scale group LRs relatively, e.g. with LambdaLR"
            )
