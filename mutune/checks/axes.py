"""The coord check's axes: a spec at one point of the width or depth axis, and how blocks are
named across depths so that the same layer is compared."""

from __future__ import annotations

import re

from .. import models
from ..config import Spec, SpecError

# seeds for a check across depths: depths 2..8 span 2 octaves against the width check's 4, so a
# slope's seed noise is about twice as large; on quickstart --smoke, CompleteP's closest own-update
# slope came to 1.11 of its limit with 3 seeds and 0.87 with 6 (docs/mup.md, depth)
DEPTH_SEEDS = 6


def at_point(spec: Spec, width: int, seq_len: int, batch_size: int, depth: int | None = None) -> Spec:
    edit = {"model.width": width, "model.seq_len": seq_len, "train.batch_size": batch_size}
    if depth is not None:  # depth scaling relative to the spec's own base depth, pinned
        edit |= {"model.depth": depth, "model.base_depth": spec.model.base_depth or spec.model.depth}
    return spec.edit(edit)


_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def depth_relative(layer: str, depth: int) -> str | None:
    """A layer's name in a check across depths, by the block's relative depth: ``half`` (block
    ``depth/2 - 1``, the residual stream half way) and ``last``, so ``h.1.attn`` at depth 4 and
    ``h.3.attn`` at depth 8 are both ``h.half.attn``. The same relative depth is what CompleteP
    keeps Θ(1): one block adds Θ(1/L) to the residual stream, half of them Θ(1). Other blocks are
    left out (None)."""
    m = _INDEX.search(layer)
    if m is None:
        return layer
    i = int(m.group(1))
    name = "last" if i == depth - 1 else "half" if i == depth // 2 - 1 else None
    return None if name is None else layer[: m.start(1)] + name + layer[m.end(1) :]


def check_depths(spec: Spec, depths: list[int]) -> list[int]:
    """The depths of a check across depth, sorted, or refused naming ``depths``: as the command line
    checks them first (:func:`mutune.arguments.check_depths`, torch-free), then where the model
    cannot apply depth at one of them (:func:`mutune.models.check_axes`)."""
    from ..arguments import check_depths as checked

    depths = checked(spec, depths)
    try:
        for d in depths:
            models.check_axes(
                at_point(spec, spec.model.base_width, spec.model.seq_len, spec.train.batch_size, d)
            )
    except SpecError as e:
        raise SpecError("depths", f"{e.key}: {e.message}") from None
    return depths
