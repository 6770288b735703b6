"""The coord check's axes: a spec at one point of the width axis or of another scaling axis, and how
layers are named across that axis's sizes so that the same layer is compared.

Along an axis found by block (depth) the blocks form a sequence: a block is compared with the block
at the same *relative* depth (:func:`depth_relative`). Along an axis found by unit (a mixture's
experts) the units are interchangeable: expert 3 of a 4-expert mixture has no counterpart in a
16-expert one, so every unit's layer is recorded under one name with the index replaced by ``*``
(:func:`unit_relative`), and the check compares their mean.
"""

from __future__ import annotations

import re

from .. import arguments, models
from ..config import HParams, Spec, SpecError
from ..config import axes as spec_axes
from ..mup import shapes
from ..mup.axes import Axis

# seeds for a check across another axis than width: depths 2..8 span 2 octaves against the width
# check's 4, so a slope's seed noise is about twice as large; on quickstart --smoke, CompleteP's
# closest own-update slope came to 1.11 of its limit with 3 seeds and 0.87 with 6 (docs/mup.md, depth).
# Across experts 2..8 on moe --smoke, the closest (an attention projection's own update, no expert's)
# came to 1.26 with 3 seeds and 0.82 with 6; across 2..16, 0.65 and 0.43 (docs/mup.md, experts)
AXIS_SEEDS = 6
DEPTH_SEEDS = AXIS_SEEDS


def at_point(
    spec: Spec,
    width: int,
    seq_len: int,
    batch_size: int,
    along: Axis | None = None,
    size: int | None = None,
) -> Spec:
    """The spec at ``width`` and, along another axis, at ``size`` relative to the spec's own base
    there (its base key, else its own size), pinned."""
    edit = {"model.width": width, "model.seq_len": seq_len, "train.batch_size": batch_size}
    if along is not None:
        edit |= {along.key: size, along.base_key: spec_axes.base(spec, along)}
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


def unit_relative(layer: str, prefixes: set[str]) -> str:
    """A layer's name in a check across a count of interchangeable units: the unit's index under
    one of ``prefixes`` replaced by ``*`` (``h.0.mlp.experts.3.c_fc`` -> ``h.0.mlp.experts.*.c_fc``)."""
    for prefix in prefixes:
        head = f"{prefix}."
        if layer.startswith(head):
            index, dot, rest = layer[len(head) :].partition(".")
            if index.isdigit():
                return f"{head}*{dot}{rest}"
    return layer


def relative_names(spec: Spec, hp: HParams, vocab_size: int, along: Axis, size: int):
    """How the layers of ``spec``'s model (at ``size`` along ``along``) are named across the axis's
    sizes: a function of the layer's name, returning None for a layer left out."""
    if along.found_by == "blocks":
        return lambda layer: depth_relative(layer, size)
    impl, width = models.family(spec), spec.model.width
    build = lambda n: impl.bare(spec.edit({along.key: n}), hp, vocab_size, width)  # noqa: E731
    prefixes = shapes.unit_prefixes(build, size, along.key.partition(".")[2])
    return lambda layer: unit_relative(layer, prefixes)


def check_sizes(spec: Spec, along: Axis, sizes: list[int]) -> list[int]:
    """The sizes of a check across ``along`` (as :func:`mutune.arguments.check_sizes` returned them,
    torch-free), refused naming them (``depths``, ``experts``) where the model cannot apply the axis
    at one of them (:func:`mutune.models.check_axes`)."""
    try:
        for n in sizes:
            models.check_axes(
                at_point(spec, spec.model.base_width, spec.model.seq_len, spec.train.batch_size, along, n)
            )
    except SpecError as e:
        raise SpecError(arguments.sizes_arg(along), f"{e.key}: {e.message}") from None
    return sizes
