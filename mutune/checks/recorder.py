"""Recording activation sizes during the coord check's forward passes.

Each forward yields, per recorded layer, mean |x_t| and mean |x_t − x_0| (the change since the
forward at init, on the same batch: what under-updating shrinks and over-updating inflates). The
layers, found at any nesting depth:

- ``embedding``: the input of the first block (the embedding stage as the blocks see it);
- ``block``: every element of every outermost ``nn.ModuleList`` / ``nn.Sequential`` (nanoGPT's
  ``transformer.h``, Llama's ``model.layers``), readouts and embeddings left out;
- ``leaf``: with ``leaves=True``, every module inside a block that holds parameters itself (each
  Linear, norm, convolution): a layer whose own LR is wrong shows here before it shows in a block;
- ``other``: every other module holding parameters outside the blocks (a final norm);
- ``attn_logits``: what enters every attention softmax, however it is computed and over however
  many tokens: scores found by what they are (:mod:`.scores`: a product of two activations, scaled
  and masked, normalised across its last axis: ``torch.bmm`` / ``einsum`` / ``matmul`` with a
  softmax or with ``exp`` over its sum, Hugging Face's eager attention), q·kᵀ·scale (+ an additive
  mask) recomputed from the arguments of every ``scaled_dot_product_attention`` call, and the input
  of any softmax torch's own attention code runs (``nn.MultiheadAttention``); masked entries are
  left out;
- ``attn_scale``: with them, once (t = 0), the scale each attention applies times its head dim,
  where it can be read exactly (:mod:`.scores`; SDPA's ``scale`` or its default 1/√d);
- ``logits``: the model's output, or the input of the ``log_softmax`` that produced it.

A module that looks like attention (a class named so, or one computing a square product of two
activations) whose scores none of these revealed is listed (:meth:`Recorder.missing_attention`):
the check cannot see its scale, and says so.

Calls are seen through a ``TorchFunctionMode`` (so ``from torch.nn.functional import
scaled_dot_product_attention`` is seen too) and, for torch's own Python code such as
``F.multi_head_attention_forward`` that runs with the mode popped, by swapping the names in
``torch.nn.functional`` for the duration. Dropout is switched off during the check: it is noise,
and |x_t − x_0| would measure it instead of the updates.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .scores import LOG_SOFTMAX, SOFTMAX, WATCHED, ScoreTracer

Kind = Literal["embedding", "block", "leaf", "attn_logits", "attn_scale", "other", "logits"]

ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)
MASKED = -1e4  # an entry of the softmax input at or below this is a mask (-inf, finfo.min, -1e9), not a logit
SDPA = "scaled_dot_product_attention"
DROPOUT = {
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "feature_dropout",
}
CONTAINERS = (nn.ModuleList, nn.Sequential)


def first_tensor(out: Any) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, the first of a tuple, or the first value of
    a mapping (a Hugging Face ``ModelOutput``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def _floating(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _kept(x: torch.Tensor) -> torch.Tensor:
    """The entries of a softmax input that are logits, not masks."""
    return torch.isfinite(x) & (x > MASKED)


def _has_params(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def attention_modules(model: nn.Module) -> list[str]:
    """Modules that look like attention (class name with attn/attention, holding parameters),
    innermost first-class: one whose descendants also look like attention is not counted."""
    found = [
        n
        for n, m in model.named_modules()
        if n and ATTENTION_NAME.search(type(m).__name__) and _has_params(m)
    ]
    return [n for n in found if not any(o != n and o.startswith(n + ".") for o in found)]


def layout(
    model: nn.Module, readouts: tuple[str, ...]
) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]]]:
    """(blocks, others): the elements of every outermost ModuleList/Sequential, and the
    parameter-holding modules outside them that are neither readouts nor embeddings."""

    def is_readout(name: str) -> bool:
        return any(name == r or name.startswith(r + ".") for r in readouts)

    def holds_blocks(mod: nn.Module) -> bool:
        return any(isinstance(m, CONTAINERS) and len(m) for m in mod.modules())

    blocks: list[tuple[str, nn.Module]] = []
    others: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, mod: nn.Module) -> None:
        if isinstance(mod, CONTAINERS) and len(mod):
            for i, sub in mod.named_children():
                name = f"{prefix}.{i}" if prefix else i
                if not (is_readout(name) or isinstance(sub, nn.Embedding) or not _has_params(sub)):
                    blocks.append((name, sub))
            return
        for cname, child in mod.named_children():
            name = f"{prefix}.{cname}" if prefix else cname
            if is_readout(name) or isinstance(child, nn.Embedding) or not _has_params(child):
                continue
            if holds_blocks(child):
                visit(name, child)
            else:
                others.append((name, child))

    visit("", model)
    return blocks, others


class Recorder:
    """Hooks on the recorded modules and the attention/softmax/dropout interceptor.

    Use as ``with rec.intercept(): ...`` around the forwards; call :meth:`take` after each forward
    for that forward's ``{layer: (mean |x_t|, mean |x_t − x_0|)}`` (the first forward is t = 0)."""

    def __init__(
        self,
        model: nn.Module,
        readouts: tuple[str, ...],
        out_features: int | None = None,
        leaves: bool = True,
    ):
        self.out_features = out_features
        self.values: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        self.kinds: dict[str, Kind] = {}
        self.first: dict[str, list[torch.Tensor]] = defaultdict(list)  # x_0 of every call, per layer
        self.calls: dict[str, int] = defaultdict(int)
        self.t = 0
        self.stack: list[str] = []
        self.in_layer: list[bool] = []  # beside the stack: is that module a Linear/Embedding (a layer)
        self.handles: list = []
        self.pre_log_softmax: list[tuple[torch.Tensor, torch.Tensor]] = []  # (output, input) pairs
        self.attention = attention_modules(model)  # named like attention
        self.attention_like: list[str] = []  # computing a square product of two activations
        self.attention_seen: set[str] = set()  # every module running when scores were recorded
        self.tracer = ScoreTracer()
        self.busy = False  # inside an intercepted call: do not intercept again
        self.quiet = False  # recomputing a module at its init parameters: record nothing
        self._embedding_done = False
        self.init_params: dict[nn.Module, dict[str, torch.Tensor]] = {}
        for name, mod in model.named_modules():  # who is running, so a softmax knows its owner
            self.handles.append(mod.register_forward_pre_hook(self._push(name)))
            self.handles.append(mod.register_forward_hook(self._pop))
        blocks, others = layout(model, readouts)
        for name, block in blocks:
            self.handles.append(block.register_forward_pre_hook(self._record_input, with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._record_output(name, "block")))
            if leaves:
                for sub, mod in block.named_modules():
                    if sub and _has_params(mod, recurse=False):
                        self._hook_own(mod, f"{name}.{sub}", "leaf")
        for name, mod in others:
            if _has_params(mod, recurse=False):
                self._hook_own(mod, name, "other")
            else:
                self.handles.append(mod.register_forward_hook(self._record_output(name, "other")))
        if not blocks:  # no block to take the input of: each embedding's output is the embedding
            for name, mod in model.named_modules():
                if isinstance(mod, nn.Embedding) and not any(name == r for r in readouts):
                    self.handles.append(mod.register_forward_hook(self._record_output(name, "embedding")))
        self.n_blocks = len(blocks)

    # -- module hooks ---------------------------------------------------------------------------

    def _push(self, name: str):
        def hook(module, args):
            self.stack.append(name)
            self.in_layer.append(isinstance(module, (nn.Linear, nn.Embedding)))

        return hook

    def _pop(self, module, args, output):
        if self.stack:
            self.stack.pop()
            self.in_layer.pop()

    def _record_output(self, layer: str, kind: Kind):
        def hook(module, args, output):
            out = first_tensor(output)
            if not self.quiet and _floating(out):
                self.add(layer, kind, out)

        return hook

    def _hook_own(self, module: nn.Module, layer: str, kind: Kind) -> None:
        """Record the module's output and the part of its change due to its own parameters."""
        self.init_params[module] = {n: p.detach().clone() for n, p in module.named_parameters(recurse=False)}

        def hook(module, args, kwargs, output):
            out = first_tensor(output)
            if self.quiet or not _floating(out) or not out.numel():
                return
            own = 0.0 if self.t == 0 else self._own_update(module, args, kwargs, out)
            self.add(layer, kind, out, own)

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _own_update(self, module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> float:
        """mean |f(x; θ_t) − f(x; θ_0)| for the module's own parameters θ (its children keep theirs):
        the µP desideratum that each layer's own update moves its output by Θ(1) (TP5 §5), which a
        wrong LR for one class of parameters (norm gains, biases) breaks without moving much else."""
        self.quiet = True
        try:
            with torch.no_grad():
                out0 = first_tensor(
                    torch.func.functional_call(module, self.init_params[module], args, kwargs)
                )
        finally:
            self.quiet = False
        if out0 is None or out0.shape != out.shape:
            return float("nan")
        return (out.detach().float() - out0.float()).abs().mean().item()

    def _record_input(self, module, args, kwargs):
        if self._embedding_done or self.quiet:
            return
        x = next((a for a in (*args, *kwargs.values()) if _floating(a)), None)
        if x is not None:
            self._embedding_done = True
            self.add("embedding", "embedding", x)

    # -- values ---------------------------------------------------------------------------------

    def add(self, layer: str, kind: Kind, x: torch.Tensor, own: float = float("nan")) -> None:
        """Record one call's mean |x| and, after init, mean |x − x_0| against the same call at t = 0
        (and ``own``, the change due to the module's own parameters, where it was measured). An empty
        output (a mixture's expert that no token reached in this forward) is not a size: nothing is
        recorded of it."""
        if not x.numel():
            return
        x = x.detach().float()
        self.kinds.setdefault(layer, kind)
        i = self.calls[layer]
        self.calls[layer] += 1
        if self.t == 0:
            self.first[layer].append(x.clone())
            delta = 0.0
        else:
            x0 = self.first[layer][i] if i < len(self.first[layer]) else None
            delta = (x - x0).abs().mean().item() if x0 is not None and x0.shape == x.shape else float("nan")
        self.values[layer].append((x.abs().mean().item(), delta, own))

    def add_logits(self, logits: torch.Tensor) -> None:
        """The output logits: the input of the log_softmax (or softmax) that produced them, if any."""
        for out, inp in self.pre_log_softmax:
            if out is logits:
                logits = inp
                break
        self.add("logits", "logits", logits)

    def take(self) -> dict[str, tuple[float, float, float]]:
        """This forward's records (mean over a layer's calls), and move on to the next step."""
        out = {k: tuple(float(np.mean(c)) for c in zip(*v, strict=True)) for k, v in self.values.items()}
        self.values = defaultdict(list)
        self.calls = defaultdict(int)
        self.pre_log_softmax = []
        self.tracer.reset()
        self._embedding_done = False
        self.t += 1
        return out

    def missing_attention(self) -> list[str]:
        """Attention-looking modules (named so, or computing a square product of two activations)
        whose scores were never seen entering a normalisation or an SDPA call."""
        looks = self.attention + [a for a in self.attention_like if a not in self.attention]
        return [a for a in looks if a not in self.attention_seen]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- the interceptor ------------------------------------------------------------------------

    def _owner(self) -> str:
        for name in reversed(self.stack):
            for a in self.attention:
                if name == a or name.startswith(a + "."):
                    self.attention_seen.add(a)
                    return a
        return self.stack[-1] if self.stack else ""

    def _attn(self, logits: torch.Tensor, keep: torch.Tensor | None, scale_d: float | None = None) -> None:
        if self.quiet:
            return
        self.attention_seen.update(self.stack)
        owner = self._owner()
        if keep is not None:
            logits = logits[keep.expand_as(logits)]
        self.add(f"{owner}.logits" if owner else "attn.logits", "attn_logits", logits)
        if scale_d is not None and self.t == 0:  # the scale is read once: it does not train
            name = f"{owner}.scale" if owner else "attn.scale"
            self.add(name, "attn_scale", torch.tensor([abs(scale_d)], dtype=torch.float64))

    def handle(self, name: str, func, args: tuple, kwargs: dict, internal: bool = False) -> Any:
        """One intercepted call: record what it reveals, then run it (dropout as the identity).
        ``internal``: called by torch's own Python code (the mode popped), whose ops are not seen."""
        if name in DROPOUT:
            return args[0] if args else kwargs["input"]
        if name == SDPA:
            return self._sdpa(func, args, kwargs)
        out = func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if not _floating(x):
            return out
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
        if dim is None or dim not in (-1, x.ndim - 1):
            return out
        with torch.no_grad():
            scores = self.tracer.traced(x)
            if scores is not None:  # the scores of an attention, normalised across the keys
                self._attn(scores.value.float(), _kept(scores.value), scores.scale_d())
            elif internal and name in SOFTMAX and x.ndim >= 3 and x.shape[-1] != self.out_features:
                # torch's own attention (nn.MultiheadAttention): its product ran where no mode sees it
                self._attn(x.float(), _kept(x))
            elif not self.quiet:  # a (log-)softmax over the output: the logits are its input
                self.pre_log_softmax.append((out, x))
        return out

    def watch(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """After an op the attention scores may pass through (:mod:`.scores`)."""
        self.tracer.carry = not (self.in_layer and self.in_layer[-1])
        scores, square = self.tracer.observe(name, args, kwargs, out)
        if scores is not None:
            with torch.no_grad():
                self._attn(scores.value.detach().float(), _kept(scores.value), scores.scale_d())
        if square and self.stack and not self.quiet and self.stack[-1] not in self.attention_like:
            self.attention_like.append(self.stack[-1])

    def _sdpa(self, func, args: tuple, kwargs: dict) -> Any:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        p = dict(zip(names, args, strict=False))
        p.update(kwargs)
        p["dropout_p"] = 0.0
        q, k, mask = p["query"], p["key"], p.get("attn_mask")
        with torch.no_grad():
            if k.shape[-3] != q.shape[-3] and q.shape[-3] % k.shape[-3] == 0:  # grouped KV heads
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            scale = p.get("scale")
            s = scale if scale is not None else q.shape[-1] ** -0.5
            logits = (q.float() @ k.float().transpose(-2, -1)) * s  # (B, nh, T, S)
            scale_d = s * self.tracer.factor(p["query"]) * self.tracer.factor(p["key"]) * q.shape[-1]
            keep = None
            if p.get("is_causal"):
                T, S = logits.shape[-2:]
                keep = torch.ones(T, S, dtype=torch.bool, device=logits.device).tril()
            elif mask is not None and mask.dtype == torch.bool:
                keep = mask
            elif mask is not None:
                logits = logits + mask.float()
                keep = torch.isfinite(logits) & (logits > MASKED)
            self._attn(logits, keep, scale_d)
        rest = {k: v for k, v in p.items() if k not in ("query", "key", "value")}
        return func(p["query"], p["key"], p["value"], **rest)

    @contextlib.contextmanager
    def intercept(self) -> Iterator[None]:
        """The TorchFunctionMode and the swapped names of ``torch.nn.functional``, for the forwards."""
        names = sorted(SOFTMAX | LOG_SOFTMAX | DROPOUT | {SDPA})
        originals = {n: getattr(F, n) for n in names if hasattr(F, n)}
        rec = self

        def guarded(name: str, fn, args, kwargs, internal: bool = False):
            """One recorded call at a time: what ``handle`` itself calls runs unrecorded."""
            if rec.busy:
                return fn(*args, **kwargs)
            rec.busy = True
            try:
                return rec.handle(name, fn, args, kwargs, internal)
            finally:
                rec.busy = False

        def patched(name: str, original):
            def call(*args, **kwargs):
                # with the mode popped: torch's own Python code (multi_head_attention_forward) calling
                internal = not torch._C._is_torch_function_mode_enabled()
                return guarded(name, original, args, kwargs, internal)

            return call

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "")
                if name in originals or name in SOFTMAX | LOG_SOFTMAX:
                    return guarded(name, func, args, kwargs)
                out = func(*args, **kwargs)
                if name in WATCHED and not rec.busy:
                    rec.watch(name, args, kwargs, out)
                return out

        for n, fn in originals.items():
            setattr(F, n, patched(n, fn))
        try:
            with Mode():
                yield
        finally:
            for n, fn in originals.items():
                setattr(F, n, fn)
