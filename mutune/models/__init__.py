"""Model construction through the family registry: build, classify, initialise.

``build`` makes an uninitialised model at any width (it is also what µP classification and FLOP
planning call on the meta device); ``create`` makes the real thing: built on the device,
initialised from the seed by the µP/SP rules, with the family's own touches (a zero query).
The families themselves (``gpt``, ``mlp``, ``factory``) are registered in :mod:`mutune.registry`;
nothing here branches on their names.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from .. import rules, shapes
from ..config import HParams, Spec, SpecError
from ..registry import FAMILIES
from ..shapes import ParamInfo


def family(spec: Spec) -> ModuleType:
    """The module implementing ``spec``'s model family."""
    return FAMILIES[spec.model.family].module()


def build(spec: Spec, hp: HParams, vocab_size: int, width: int | None = None) -> nn.Module:
    """The model at ``width`` (default ``spec.model.width``), on the current default device, not initialised."""
    width = spec.model.width if width is None else width
    return family(spec).build(spec, hp, vocab_size, width)


def readout_names(spec: Spec) -> tuple[str, ...]:
    return tuple(family(spec).readout_names(spec))


def validate(spec: Spec, hp: HParams, vocab_size: int) -> None:
    """Everything about the model that can be wrong, checked on the meta device (nothing allocated):
    a factory that does not import or build, width dims µP cannot handle, a readout not found."""
    family(spec).validate(spec)
    with torch.device("meta"):
        build(spec, hp, vocab_size)


def classify(spec: Spec, hp: HParams, vocab_size: int, width: int | None = None) -> dict[str, ParamInfo]:
    """:func:`mutune.shapes.classify` of the spec's model, its errors naming the spec's keys."""
    m = spec.model
    impl = family(spec)
    try:
        return shapes.classify(
            lambda w: impl.bare(spec, hp, vocab_size, w),
            m.width if width is None else width,
            m.base_width,
            readout_names(spec),
            out_features=vocab_size,  # every family predicts a token: its output size is the vocabulary
        )
    except shapes.ShapeError as e:
        raise SpecError(f"model.{e.arg}" if e.arg else "model", str(e)) from None


def create(
    spec: Spec, hp: HParams, vocab_size: int, device: torch.device | str = "cpu", seed: int | None = None
) -> tuple[nn.Module, dict[str, ParamInfo]]:
    """Build, classify and initialise the model. Same seed, same weights, on any device."""
    m = spec.model
    infos = classify(spec, hp, vocab_size)
    with torch.device(device):
        model = build(spec, hp, vocab_size)
    gen = torch.Generator().manual_seed(spec.seed if seed is None else seed)
    rules.init_weights(
        model, infos, m.parametrization, hp.init_std, m.base_width, gen, zero_init_readout=m.zero_init_readout
    )
    family(spec).after_init(model, spec)
    return model, infos
