"""Attention scores found by what they are, not by what a function or a class is called.

The 1/√d_head-against-1/d question is decided by the attention logits, so the coord check must see
them however a model computes them: ``scaled_dot_product_attention``, ``torch.bmm`` and a softmax,
``torch.einsum`` and a softmax written out as ``exp`` over its sum, Hugging Face's eager
``matmul`` + additive mask + ``softmax(dtype=float32)``, over any number of tokens (a ViT's CLS
token and patches, a model's register tokens), in a class called anything. What they are:

- a **product of two activations** (``matmul``, ``@``, ``bmm``, ``baddbmm``, ``einsum``, ``mm``; no
  operand a parameter or a view of one, which is what a Linear or a raw weight would be),
- carried through **scaling and masking** (``*``, ``/``, ``+`` a mask, ``masked_fill``, ``where``,
  a dtype cast, a view; a shift by its own row maximum is a shift, not a change of size),
- into a **normalisation across its last axis** (the keys): ``softmax`` / ``log_softmax`` of it,
  ``exp`` of it divided by that ``exp``'s sum over the last axis, or ``exp`` of it less its
  ``logsumexp``.

What enters the normalisation (the scaled, masked scores, before any shift by the row maximum) is
what the check records. With it, where it can be read exactly, the **scale** the model applies: the
ratio of the normalised scores to the product on every unmasked entry (constant for a scale and an
additive mask), times any number q or k were multiplied by on their way to the product (tracked
through views), times the contracted size (the head dim). µP wants scale × d_head the same at every
width (1/d attention: α·√d_base/d; a fixed head dim: any constant), and 1/√d_head with a growing
head dim makes it grow like √width exactly: the violation shows there with no noise at all, where
the logits themselves show it at +0.3 to +0.5 (the check's widths, a few steps; +0.5 only in the
limit). A scale that is not one number (a soft cap, a learned per-head temperature) is not read. A product of two activations whose output is a square map (token × token)
and that no normalisation follows (sigmoid attention, linear attention's kᵀv) still marks the module
computing it as attention-like: the check then says it could not see its scale rather than pass it.

Plain bookkeeping over the ops a ``TorchFunctionMode`` sees; :mod:`.recorder` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

PRODUCTS = {"matmul", "bmm", "baddbmm", "einsum", "mm"}
SOFTMAX = {"softmax", "_softmax", "special_softmax"}
LOG_SOFTMAX = {"log_softmax", "_log_softmax", "special_log_softmax"}
# ops that change only a tensor's dtype or layout: whatever it was (scores, their exp, its sum) it stays
VIEWS = {
    "float",
    "half",
    "bfloat16",
    "double",
    "to",
    "type",
    "contiguous",
    "clone",
    "view",
    "reshape",
    "unsqueeze",
}
# shape-preserving ops that scale, mask, cast or reshape the scores without changing what they are
CARRY = {
    "mul",
    "mul_",
    "div",
    "div_",
    "add",
    "add_",
    "sub",
    "sub_",
    "masked_fill",
    "masked_fill_",
    "where",
    "nan_to_num",
    "clamp",
    "clamp_",
} | (VIEWS - {"unsqueeze"})
REDUCE = {"sum", "amax", "max", "logsumexp"}
# ops a scalar factor of q or k is carried through on its way to the product
LAYOUT = VIEWS | {
    "transpose",
    "permute",
    "split",
    "chunk",
    "unbind",
    "flatten",
    "unflatten",
    "squeeze",
    "expand",
}
WATCHED = PRODUCTS | CARRY | REDUCE | LAYOUT | {"exp", "exp_"}

Stage = Literal["scores", "exp", "sum", "shift", "lse", "normalised_log"]


@dataclass
class Trace:
    """What a tensor is in the life of one set of scores: ``root`` (the product it came from),
    ``value`` (the scaled, masked scores as they were before any shift) and its ``stage``."""

    root: int
    value: torch.Tensor
    stage: Stage
    product: torch.Tensor | None = None  # the product itself (q·kᵀ before any scale)
    contracted: int = 0  # the size summed over in the product: the head dim
    factor: float = 1.0  # the numbers q and k were multiplied by before the product

    def scale_d(self) -> float | None:
        """The scale applied between the product and the normalisation, times the factors of q and k,
        times the head dim; None where it is not one number."""
        if self.product is None or not self.contracted:
            return None
        v, p = self.value.detach().double(), self.product.detach().double()
        if v.shape != p.shape:
            return None
        keep = torch.isfinite(v) & (v > -1e4) & (p.abs() > 1e-6 * p.abs().max())
        if not keep.any():
            return None
        r = v[keep] / p[keep]
        lo, hi, mid = r.min().item(), r.max().item(), r.median().item()
        if mid == 0 or hi - lo > 1e-3 * abs(mid):
            return None
        return mid * self.factor * self.contracted


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
    return out


def is_weight(t: torch.Tensor) -> bool:
    """A parameter or a view of one (``w.T``, ``w[0]``): what a layer multiplies by, not an activation."""
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _last_dim(args: tuple, kwargs: dict, ndim: int, default: Any = None) -> bool:
    dim = args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else kwargs.get("dim", default)
    if isinstance(dim, (tuple, list)):
        dim = dim[0] if len(dim) == 1 else None
    return dim is not None and dim in (-1, ndim - 1)


class ScoreTracer:
    """The traces of one forward: which tensors are (scaled, masked, exponentiated...) attention scores."""

    def __init__(self) -> None:
        self.traces: dict[int, Trace] = {}
        self.alive: list[torch.Tensor] = []  # the traced tensors, kept so that their ids stay unique
        self.weights: set[int] = set()  # products of weights only (W1 @ W2): not activations either
        self.factors: dict[
            int, float
        ] = {}  # activations multiplied by a number (q · scale), and views of them
        # False while a layer's own forward runs (a Linear's): a number it multiplies its output by is
        # that layer's parametrization (u-µP's W x / √fan_in), not a scale the attention applies
        self.carry = True

    def reset(self) -> None:
        self.traces, self.alive, self.weights, self.factors = {}, [], set(), {}

    def factor(self, t: Any) -> float:
        """The number ``t`` was multiplied by on its way here (1 if none was seen)."""
        return self.factors.get(id(t), 1.0) if isinstance(t, torch.Tensor) else 1.0

    def _carry_factor(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """q · 0.125, q / √d, and the views of a scaled q: remember the number."""
        x = args[0] if args else None
        if not self.carry or not isinstance(x, torch.Tensor) or id(x) in self.traces:
            return
        if name in ("mul", "div") and len(args) == 2 and isinstance(args[1], (int, float)):
            if isinstance(out, torch.Tensor) and args[1]:
                self.factors[id(out)] = self.factor(x) * (args[1] if name == "mul" else 1.0 / args[1])
                self.alive.append(out)
        elif name in LAYOUT and id(x) in self.factors:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for o in outs:
                if isinstance(o, torch.Tensor):
                    self.factors[id(o)] = self.factors[id(x)]
                    self.alive.append(o)

    def _mark(self, out: torch.Tensor, trace: Trace) -> None:
        self.traces[id(out)] = trace
        self.alive.append(out)

    def _weight(self, t: torch.Tensor) -> bool:
        return is_weight(t) or id(t) in self.weights

    def traced(self, x: Any, stage: Stage = "scores") -> Trace | None:
        t = self.traces.get(id(x)) if isinstance(x, torch.Tensor) else None
        return t if t is not None and t.stage == stage else None

    def observe(self, name: str, args: tuple, kwargs: dict, out: Any) -> tuple[Trace | None, bool]:
        """After one op ran: (the trace of the scores it normalised, to record, or None; whether it was
        a product of two activations with a square (token × token) output, an attention-like computation)."""
        if name in PRODUCTS:
            return None, self._product(name, args, kwargs, out)
        tensors = _tensors(args, kwargs)
        traced = [(t, self.traces[id(t)]) for t in tensors if id(t) in self.traces]
        if not traced:
            self._carry_factor(name, args, kwargs, out)
            return None, False
        x, tr = traced[0]
        if name in VIEWS and len(traced) == 1 and isinstance(out, torch.Tensor):
            same_size = tr.stage == "scores" and out.numel() == tr.value.numel()
            self._mark(out, self._next(tr, out if same_size else tr.value, tr.stage))
            return None, False
        if name in REDUCE:
            out_t = out[0] if isinstance(out, tuple) else out  # torch.max(x, dim) -> (values, indices)
            if not isinstance(out_t, torch.Tensor):
                return None, False
            if name == "sum" and tr.stage == "exp" and _last_dim(args, kwargs, x.ndim):
                self._mark(out_t, self._next(tr, tr.value, "sum"))
            elif name == "logsumexp" and tr.stage == "scores" and _last_dim(args, kwargs, x.ndim):
                self._mark(out_t, self._next(tr, tr.value, "lse"))
            elif name in ("amax", "max") and tr.stage == "scores":
                self._mark(out_t, self._next(tr, tr.value, "shift"))
            return None, False
        if name in ("exp", "exp_") and tr.stage in ("scores", "normalised_log"):
            if tr.stage == "normalised_log":  # exp(s - logsumexp(s)): a softmax written out
                return tr, False
            self._mark(out, self._next(tr, tr.value, "exp"))
            return None, False
        if name not in CARRY or not isinstance(out, torch.Tensor):
            return None, False
        others = [self.traces[id(t)] for t, _ in traced[1:]]
        same = [o for o in others if o.root == tr.root]
        if name in ("div", "div_") and tr.stage == "exp" and any(o.stage == "sum" for o in same):
            return tr, False  # exp(s) / exp(s).sum(-1): a softmax written out
        if tr.stage != "scores" or len(same) != len(others):
            return None, False
        if any(o.stage == "lse" for o in same) and name in ("sub", "sub_"):
            self._mark(out, self._next(tr, tr.value, "normalised_log"))
        elif any(o.stage == "shift" for o in same):  # s - s.amax(-1): the same scores, shifted
            self._mark(out, self._next(tr, tr.value, "scores"))
        elif not same and out.numel() == tr.value.numel():
            self._mark(out, self._next(tr, out, "scores"))
        return None, False

    @staticmethod
    def _next(tr: Trace, value: torch.Tensor, stage: Stage) -> Trace:
        return Trace(tr.root, value, stage, tr.product, tr.contracted, tr.factor)

    def _product(self, name: str, args: tuple, kwargs: dict, out: Any) -> bool:
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim < 2:
            return False
        operands = _tensors(args, kwargs)
        if len(operands) < 2:
            return False
        if all(self._weight(t) for t in operands):
            self.weights.add(id(out))
            self.alive.append(out)
            return False
        if any(self._weight(t) for t in operands) or any(id(t) in self.traces for t in operands):
            return False
        a, b = operands[-2:]  # (baddbmm's first operand is what the product is added to)
        factor = self.factor(a) * self.factor(b)
        self._mark(out, Trace(id(out), out, "scores", out, _contracted(name, args, a), factor))
        return out.shape[-1] == out.shape[-2] > 1


def _contracted(name: str, args: tuple, a: torch.Tensor) -> int:
    """The size a product sums over: the first operand's last dim, or einsum's summed letters."""
    if name != "einsum":
        return a.shape[-1] if a.ndim else 0
    eq = str(args[0]).replace(" ", "")
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    if "->" not in eq or "..." in eq:
        return 0
    lhs, out = eq.split("->")
    sizes: dict[str, int] = {}
    for spec, op in zip(lhs.split(","), ops, strict=False):
        if len(spec) != op.ndim:
            return 0
        sizes.update(zip(spec, op.shape, strict=True))
    summed = set(lhs.replace(",", "")) - set(out)
    n = 1
    for letter in summed:
        n *= sizes[letter]
    return n if summed else 0
