"""Model construction: pick the family, set its forward multipliers, classify and initialise.

``build`` makes an uninitialised model at any width (it is also what µP classification and
FLOP planning call on the meta device); ``create`` makes the real thing: built on the device,
initialised from the seed by the µP/SP rules, with the optional zero-inits applied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import parametrize
from ..config import HParams, Spec
from . import factory
from .gpt import GPT, GPTConfig
from .mlp import MLP, MLPConfig


def head_dims(spec: Spec, width: int) -> tuple[int, int]:
    """(n_head, head_dim) of a GPT at ``width``: fixed head_dim grows heads, fixed n_head grows head_dim."""
    m = spec.model
    if m.head_dim is not None:
        return width // m.head_dim, m.head_dim
    return m.n_head, width // m.n_head


def build(spec: Spec, hp: HParams, vocab_size: int, width: int | None = None) -> nn.Module:
    """The model at ``width`` (default ``spec.model.width``), on the current default device, not initialised."""
    m = spec.model
    width = m.width if width is None else width
    if m.family == "gpt":
        n_head, head_dim = head_dims(spec, width)
        _, base_head_dim = head_dims(spec, m.base_width)
        mult = parametrize.multipliers(hp, m.parametrization, width, m.base_width, head_dim, base_head_dim)
        return GPT(
            GPTConfig(
                vocab_size=vocab_size,
                seq_len=m.seq_len,
                width=width,
                depth=m.depth,
                n_head=n_head,
                mlp_ratio=m.mlp_ratio,
                bias=m.bias,
                tie_embeddings=m.tie_embeddings,
                input_mult=mult.input,
                output_mult=mult.output,
                attn_scale=mult.attn,
            )
        )
    if m.family == "mlp":
        mult = parametrize.multipliers(hp, m.parametrization, width, m.base_width)
        return MLP(
            MLPConfig(
                vocab_size=vocab_size,
                seq_len=m.seq_len,
                width=width,
                depth=m.depth,
                bias=m.bias,
                input_mult=mult.input,
                output_mult=mult.output,
            )
        )
    if m.family == "factory":
        model = factory.construct(spec, hp, vocab_size, width)
        infos = parametrize.classify(builder(spec, hp, vocab_size), width, m.base_width, readout_names(spec))
        return factory.instrument(model, infos, spec, hp, width)
    raise AssertionError(f"unknown model family {m.family!r}")  # the spec validator rejects it first


def builder(spec: Spec, hp: HParams, vocab_size: int) -> Callable[[int], nn.Module]:
    """The bare model at any width (for classification on the meta device)."""
    if spec.model.family == "factory":
        return lambda width: factory.construct(spec, hp, vocab_size, width)
    return lambda width: build(spec, hp, vocab_size, width)


def readout_names(spec: Spec) -> tuple[str, ...]:
    if spec.model.family == "factory":
        return tuple(spec.model.readout)
    return GPT.readout_names if spec.model.family == "gpt" else MLP.readout_names


def validate(spec: Spec, hp: HParams, vocab_size: int) -> None:
    """Everything about the model that can be wrong, checked on the meta device (nothing allocated):
    a factory that does not import or build, width dims µP cannot handle, a readout not found."""
    if spec.model.family == "factory":
        factory.validate(spec)
    with torch.device("meta"):
        build(spec, hp, vocab_size)


def classify(
    spec: Spec, hp: HParams, vocab_size: int, width: int | None = None
) -> dict[str, parametrize.ParamInfo]:
    m = spec.model
    return parametrize.classify(
        builder(spec, hp, vocab_size), m.width if width is None else width, m.base_width, readout_names(spec)
    )


def create(
    spec: Spec, hp: HParams, vocab_size: int, device: torch.device | str = "cpu", seed: int | None = None
) -> tuple[nn.Module, dict[str, parametrize.ParamInfo]]:
    """Build, classify and initialise the model. Same seed, same weights, on any device."""
    m = spec.model
    infos = classify(spec, hp, vocab_size)
    with torch.device(device):
        model = build(spec, hp, vocab_size)
    gen = torch.Generator().manual_seed(spec.seed if seed is None else seed)
    parametrize.init_weights(
        model, infos, hp, m.parametrization, m.base_width, gen, zero_init_readout=m.zero_init_readout
    )
    if m.zero_init_query and isinstance(model, GPT):
        model.zero_init_query_()
    return model, infos
