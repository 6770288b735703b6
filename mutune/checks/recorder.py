"""Recording activation sizes during a forward pass: module hooks and an attention interceptor.

Each forward yields one dict of mean |x| per recorded layer: the embedding output (the input of
the first block), every top-level block's output, the attention logits q·kᵀ·scale of every
attention module (SDPA computes them out of sight, so its call is intercepted and the product
recomputed from its q, k and scale), every other top-level module's output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Kind = Literal["embedding", "block", "attn_logits", "other", "logits"]


class Recorder:
    """Forward hooks on the tracked modules and an SDPA interceptor; one dict of mean |x| per forward."""

    def __init__(self, model: nn.Module, readouts: tuple[str, ...]):
        self.values: dict[str, list[float]] = {}
        self.kinds: dict[str, Kind] = {}
        self.stack: list[str] = []
        self.handles: list = []
        names = {mod: name for name, mod in model.named_modules()}
        # every module pushes its name while it runs, so SDPA knows who called it
        for mod, name in names.items():
            self.handles.append(mod.register_forward_pre_hook(self._push(name)))
            self.handles.append(mod.register_forward_hook(self._pop))
        first_block = True
        for name, child in model.named_children():
            if name in readouts:
                continue
            if isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child):
                for i, sub in enumerate(child):
                    if first_block:
                        self.handles.append(sub.register_forward_pre_hook(self._record_input("embedding")))
                        first_block = False
                    self.handles.append(
                        sub.register_forward_hook(self._record_output(f"{name}.{i}", "block"))
                    )
            else:
                self.handles.append(child.register_forward_hook(self._record_output(name, "other")))
        if not first_block:  # the embedding stage is recorded as one: skip its separate lookups
            for name, child in model.named_children():
                if isinstance(child, nn.Embedding):
                    self.kinds[name] = "skip"  # type: ignore[assignment]

    def _push(self, name: str):
        def hook(module, args):
            self.stack.append(name)

        return hook

    def _pop(self, module, args, output):
        if self.stack:
            self.stack.pop()

    def add(self, layer: str, kind: Kind, x: torch.Tensor) -> None:
        if self.kinds.get(layer) == "skip":
            return
        self.kinds.setdefault(layer, kind)
        self.values.setdefault(layer, []).append(x.detach().float().abs().mean().item())

    def _record_output(self, layer: str, kind: Kind):
        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                self.add(layer, kind, out)

        return hook

    def _record_input(self, layer: str):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                self.add(layer, "embedding", args[0])

        return hook

    @contextlib.contextmanager
    def attention(self) -> Iterator[None]:
        """Replace F.scaled_dot_product_attention with a version that also records q·kᵀ·scale."""
        original = F.scaled_dot_product_attention

        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
            with torch.no_grad():
                k = key
                if k.shape[-3] != query.shape[-3] and query.shape[-3] % k.shape[-3] == 0:  # grouped KV
                    k = k.repeat_interleave(query.shape[-3] // k.shape[-3], dim=-3)
                s = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
                logits = (query @ k.transpose(-2, -1)).float() * s  # (B, nh, T, S)
                if is_causal:
                    T, S = logits.shape[-2:]
                    keep = torch.ones(T, S, dtype=torch.bool, device=logits.device).tril()
                    logits = logits[..., keep]
                elif attn_mask is not None and attn_mask.dtype == torch.bool:
                    logits = logits[attn_mask.expand_as(logits)]
                owner = self.stack[-1] if self.stack else "attention"
                self.add(f"{owner}.logits" if owner else "logits", "attn_logits", logits)
            return original(
                query,
                key,
                value,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                **kw,
            )

        F.scaled_dot_product_attention = sdpa
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original

    def take(self) -> dict[str, float]:
        out = {k: float(np.mean(v)) for k, v in self.values.items()}
        self.values = {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
