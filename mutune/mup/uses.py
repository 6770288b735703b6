"""How a model's forward uses each raw parameter: what decides its role where no module says it.

A parameter held by an ``nn.Linear``, a convolution, an ``nn.Embedding`` or a norm has a role its
module states. A raw ``nn.Parameter`` of any other module has only a shape, and shapes lie: a
(vocab, width) token table used through ``F.embedding`` and a (vocab, width) readout used as
``x @ w.T`` look alike; so do a (seq_len, width) position table and a readout; a fused (3, width,
width) q/k/v weight is three matrices of fan-in width, not one of fan-in width². What decides is
what the forward does with it, seen here by running it once (on the meta device: nothing is
allocated) under a ``TorchFunctionMode``:

- **indexed as a table** (``F.embedding``, ``w[ids]``, or rows sliced, ``w[:T]``, then added to
  the stream): an embedding;
- **added to the stream** whole (``x + w``, ``torch.cat([w, x])``: a CLS token, a bias, a learned
  position table used whole) or **multiplied into it elementwise** (``x * gain``): vector-like;
- **multiplied into the stream** by a product (``x @ w``, ``x @ w.T``, ``F.linear(x, w)``,
  ``einsum``, a convolution): a matrix whose fan-in is the size of the dims the product sums over,
  and whose role follows from which of those dims, and of its output dims, grow with width.

A use is recorded against the parameter's own dims (a view's dims are mapped back through its
strides, so ``w.T``, ``w[0]`` and ``w.transpose(0, 1)`` are read as ``w``). Where the forward cannot
run or a parameter is never seen, its shape is the fallback (:mod:`.shapes`). No spec here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

UseKind = Literal["table", "added", "scaled", "product"]

TABLE = {"embedding", "index_select", "take", "gather"}
ADDED = {"add", "add_", "sub", "sub_", "cat", "concat", "concatenate"}
SCALED = {"mul", "mul_", "div", "div_"}
PRODUCTS = {"matmul", "mm", "bmm", "baddbmm", "addmm", "einsum", "linear", "conv1d", "conv2d", "conv3d"}
WATCHED = TABLE | ADDED | SCALED | PRODUCTS | {"__getitem__"}


@dataclass(frozen=True)
class Use:
    """One use of a parameter by the forward. For a product, the parameter's dims it sums over
    (``contracted``) and those that reach the product's output (``outputs``)."""

    kind: UseKind
    how: str  # for `mutune inspect`: "F.embedding", "x @ w", "einsum btd,kde->kbte"...
    contracted: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()

    def describe(self) -> str:
        what = {
            "table": "indexed as a table",
            "added": "added to the stream",
            "scaled": "multiplied into the stream elementwise",
            "product": "multiplied into the stream",
        }[self.kind]
        summed = f", summed over dim {','.join(map(str, self.contracted))}" if self.kind == "product" else ""
        return f"{what} ({self.how}{summed})"


def _dims(view: torch.Tensor, base: torch.Tensor) -> tuple[int | None, ...]:
    """For each dim of ``view`` (a view of ``base``), the dim of ``base`` it runs along (by stride),
    or None (a broadcast dim, a dim of size 1, dims merged by a reshape)."""
    if view is base:
        return tuple(range(base.ndim))
    out: list[int | None] = []
    for i in range(view.ndim):
        if view.shape[i] == 1 or view.stride(i) == 0:
            out.append(None)
            continue
        js = [
            j
            for j in range(base.ndim)
            if base.shape[j] > 1 and base.stride(j) == view.stride(i) and view.shape[i] <= base.shape[j]
        ]
        out.append(js[0] if len(js) == 1 else None)
    return tuple(out)


def _product_dims(
    name: str, args: tuple, pos: int, t: torch.Tensor
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(dims of ``t`` summed over, dims of ``t`` in the output, how) where ``t`` is operand ``pos``."""
    if name in ("linear",):
        return ((1,), (0,), "F.linear") if t.ndim == 2 else ((), (), "")
    if name.startswith("conv"):
        return tuple(range(1, t.ndim)), (0,), f"F.{name}"
    if name == "einsum":
        eq = str(args[0]).replace(" ", "")
        if "->" not in eq or "..." in eq:
            return (), (), ""
        lhs, out = eq.split("->")
        specs = lhs.split(",")
        mine = specs[pos - 1]
        others = "".join(s for i, s in enumerate(specs) if i != pos - 1)
        summed = tuple(i for i, c in enumerate(mine) if c in others and c not in out)
        kept = tuple(i for i, c in enumerate(mine) if c in out and c not in others)
        return summed, kept, f"einsum {eq}"
    # matmul, mm, bmm, and baddbmm/addmm's two factors: (..., n, k) @ (..., k, m)
    first = pos == (1 if name in ("baddbmm", "addmm") else 0)
    if t.ndim == 1:
        return (0,), (), "x @ w" if not first else "w @ x"
    if first:
        return (t.ndim - 1,), (t.ndim - 2,), "w @ x"
    return (t.ndim - 2,), (t.ndim - 1,), "x @ w"


class _Watcher:
    def __init__(self, model: nn.Module, names: Iterable[str]):
        wanted = set(names)
        self.params = {id(p): (n, p) for n, p in model.named_parameters() if n in wanted}
        self.buffers = {id(b) for b in model.buffers()}
        self.uses: dict[str, list[Use]] = {}
        self.selected: dict[int, torch.Tensor] = {}  # rows of a parameter taken by w[:T], w[i] (kept alive)

    def _root(self, t: Any) -> tuple[str, torch.Tensor] | None:
        """The watched parameter ``t`` is, or is a view of."""
        if not isinstance(t, torch.Tensor):
            return None
        found = self.params.get(id(t)) or self.params.get(id(getattr(t, "_base", None)))
        return found

    def _activation(self, t: Any) -> bool:
        """A floating tensor the forward computed: not a parameter, not a buffer, nor a view of one."""
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return False
        base = getattr(t, "_base", None)
        if isinstance(t, nn.Parameter) or isinstance(base, nn.Parameter):
            return False
        return id(t) not in self.buffers and id(base) not in self.buffers

    def _add(self, name: str, use: Use) -> None:
        seen = self.uses.setdefault(name, [])
        if use not in seen:
            seen.append(use)

    def note(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        flat = list(args) + list(kwargs.values())
        if name == "einsum" and len(args) == 2 and isinstance(args[1], (list, tuple)):
            flat = [args[0], *args[1]]
        elif name in ("cat", "concat", "concatenate") and args and isinstance(args[0], (list, tuple)):
            flat = list(args[0])
        roots = [(i, t, self._root(t)) for i, t in enumerate(flat) if self._root(t) is not None]
        if not roots:
            return
        stream = any(self._activation(t) for t in flat)
        for pos, t, (pname, p) in roots:
            indexed = id(t) in self.selected  # rows selected: w[:T], w[2]
            if (name == "embedding" and pos == 1) or (name in TABLE - {"embedding"} and pos == 0):
                self._add(pname, Use("table", f"F.{name}" if name == "embedding" else name))
            elif name == "__getitem__" and pos == 0:
                index = flat[1] if len(flat) > 1 else None
                items = index if isinstance(index, tuple) else (index,)
                if any(isinstance(i, torch.Tensor) and not i.is_floating_point() for i in items):
                    self._add(pname, Use("table", "w[ids]"))
                elif isinstance(out, torch.Tensor):  # a selection: what it is used for decides
                    self.selected[id(out)] = out
            elif name in PRODUCTS and stream:
                if (name == "linear" or name.startswith("conv")) and pos == 2:
                    self._add(pname, Use("added", f"F.{name} bias"))
                    continue
                if name in ("baddbmm", "addmm") and pos == 0:
                    self._add(pname, Use("added", name))
                    continue
                summed, kept, how = _product_dims(name, args, pos, t)
                dims = _dims(t, p)
                c = tuple(dims[i] for i in summed)
                o = tuple(dims[i] for i in kept if dims[i] is not None)
                if how and summed and None not in c:
                    self._add(pname, Use("product", how, tuple(sorted(c)), tuple(sorted(o))))
            elif name in ADDED and stream:
                self._add(pname, Use("table", "rows indexed, added") if indexed else Use("added", name))
            elif name in SCALED and stream:
                self._add(pname, Use("scaled", name))


def observe(
    model: nn.Module, run: Callable[[nn.Module], object], names: Iterable[str]
) -> dict[str, list[Use]]:
    """Run ``run(model)`` (one forward) and return each named parameter's uses, in order seen.
    Exceptions from the forward propagate: the caller decides what a forward that cannot run means."""
    watcher = _Watcher(model, names)

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            out = func(*args, **kwargs)
            if name in WATCHED:
                watcher.note(name, args, kwargs, out)
            return out

    with Mode(), torch.no_grad():
        run(model)
    return watcher.uses


def size_of(shape: tuple[int, ...], dims: Iterable[int]) -> int:
    return math.prod(shape[d] for d in dims)
