"""µP for your own model and training loop: ``mutune.parametrize(model, base_width=..., factory=...)``.

The µP core lives in small modules, one concept each (:mod:`mutune.mup`): ``shapes`` (which dims of
each parameter grow with width), ``parametrizations`` (µP and SP: the rule tables, the forward
multipliers), ``init`` and ``optim`` (param groups, optimizers, the LR-ratio guard).
This module puts them behind one call for people who keep their own training loop, and names the
argument at fault when something is wrong (a :class:`~mutune.config.SpecError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .config import HParams, SpecError
from .mup import hooks, init, optim, parametrizations, shapes
from .mup.optim import MuPError, check_param_groups
from .mup.parametrizations import Multipliers, Parametrization, multipliers
from .mup.shapes import ParamInfo, ShapeError

__all__ = [
    "MuPError",
    "Multipliers",
    "ParamInfo",
    "check_param_groups",
    "classify",
    "multipliers",
    "parametrize",
]


def classify(
    build: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    readout: Iterable[str] = (),
    out_features: int | None = None,
    roles: Mapping[str, str] | None = None,
    forward: Callable[[nn.Module], object] | None = None,
) -> dict[str, ParamInfo]:
    """:func:`mutune.mup.shapes.classify`, with its errors naming this API's arguments."""
    try:
        return shapes.classify(build, width, base_width, readout, out_features, roles=roles, forward=forward)
    except ShapeError as e:
        raise SpecError(e.arg or "factory", str(e)) from None


def _example_forward(model: nn.Module, example_input: Any) -> Callable[[nn.Module], object] | None:
    """One forward on ``example_input`` (moved to where a model's parameters are), or, not given, on
    one token id for a model with an ``nn.Embedding``; None when there is nothing to run it on."""
    if example_input is None:
        if not any(isinstance(m, nn.Embedding) for m in model.modules()):
            return None
        example_input = torch.zeros(1, 1, dtype=torch.long)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)

    def run(m: nn.Module) -> object:
        device = next(m.parameters()).device
        return m(*(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs))

    return run


def parametrize(
    model: nn.Module,
    *,
    base_width: int,
    factory: Callable[[int], nn.Module] | None = None,
    base_model: nn.Module | None = None,
    delta_model: nn.Module | None = None,
    width: int | None = None,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    init_std: float | None = None,
    alpha_out: float = 1.0,
    scale_readout: bool = True,
    readout: Iterable[str] = (),
    out_features: int | None = None,
    roles: Mapping[str, str] | None = None,
    example_input: Any = None,
    parametrization: Parametrization | str = "mup",
    seed: int = 0,
) -> list[dict]:
    """µP for your own model and training loop: returns optimizer param groups.

    ``mutune.parametrize(model, base_width=..., factory=..., optimizer=...)``. µP needs to know
    which dims of each parameter grow with width, and finds out by comparing shapes at two widths
    (as ``mup.set_base_shapes`` does), so give either ``factory`` (a callable ``width -> model``;
    it is called on the meta device, nothing is allocated) or ``base_model`` and ``delta_model``
    (the model at ``base_width`` and at any other width). ``model``'s own width is inferred from
    its shapes unless ``width`` is given.

    What it does to ``model``:

    - with ``init_std`` given, re-initialises every parameter by the µP rule (hidden matrices
      σ·√(base/fan_in), the readout at its base-width scale, norms 1, biases 0), seeded by ``seed``;
    - with ``scale_readout`` (the default), hooks every readout module (a Linear mapping the width
      to a fixed size, e.g. the logits, or a Linear whose weight is tied to the embedding, as in
      nanoGPT and GPT-2) so its *input* is multiplied by α_out/m, m = width/base_width: the logits
      shrink by α_out/m and a readout bias keeps its size (mup's ``MuReadout``). A readout it cannot
      hook (logits from ``F.linear(x, emb.weight)``, a readout weight in a custom module) is an
      error that says what to do. Attention logits, if any, should use α_attn·√d_head_base/d_head
      rather than 1/√d_head (see ``multipliers``).

    A raw ``nn.Parameter`` (one no Linear, convolution, Embedding or norm holds) gets its role from
    how one forward uses it (indexed as a table, added to the stream, multiplied into it: see
    :mod:`mutune.mup.uses`), run on the meta device on ``example_input`` (a tensor or a tuple of
    arguments; default: one token id, for a model with an ``nn.Embedding``). Where that cannot run,
    its shape decides, with ``out_features`` (your model's output size, e.g. the vocabulary; default:
    the output size of its Linear readouts) telling a readout (paired with the output size) from a
    table such as a (seq_len, width) position embedding. ``roles`` ({parameter name: role}) overrides
    any parameter's role.

    Returns one param group per LR/weight-decay/eps treatment, each a dict with ``params``, ``lr``
    (``lr`` × the group's µP multiplier), ``weight_decay``, ``eps`` (Adam) and, for reference,
    ``lr_mult``, ``names`` and ``roles``. Pass them to ``torch.optim.AdamW(groups, betas=...)`` or
    ``torch.optim.SGD(groups, momentum=...)``. A schedule must scale each group's LR relatively
    (``LambdaLR`` does); never set one absolute LR on every group.
    """
    if optimizer == "adam":
        optimizer = "adamw"  # the same rules: Adam's update, with or without decoupled decay
    if optimizer not in optim.OPTIMIZERS:  # (the registry: mutune.mup.optimizers)
        raise SpecError(
            "optimizer", f"expected one of {', '.join(optim.OPTIMIZERS)} or adam, got {optimizer!r}"
        )
    try:
        parametrization = parametrizations.resolve(parametrization)
    except ValueError as e:
        raise SpecError("parametrization", str(e)) from None
    if factory is not None:
        with torch.device("meta"):
            base, delta = factory(base_width), factory(2 * base_width)
    elif base_model is not None and delta_model is not None:
        base, delta = base_model, delta_model
    else:
        raise SpecError(
            "factory",
            "µP must know which dims grow with width: pass factory=lambda width: MyModel(width), or "
            "base_model= and delta_model= (your model at base_width and at another width)",
        )
    if shapes.param_shapes(base) == shapes.param_shapes(delta):
        raise SpecError(
            "factory", "the models at the two widths have the same shapes; does the factory use its width?"
        )
    if width is None:
        try:
            width = shapes.infer_width(model, base, base_width)
        except ShapeError as e:
            raise SpecError(e.arg, str(e)) from None
    elif factory is not None:
        with torch.device("meta"):
            built = factory(width)
        if shapes.param_shapes(built) != shapes.param_shapes(model):
            raise SpecError("width", f"factory({width}) does not build a model with the shapes of `model`")

    def build(w: int) -> nn.Module:
        return model if w == width else base if w == base_width else delta

    infos = classify(
        build, width, base_width, readout, out_features, roles, _example_forward(model, example_input)
    )
    if init_std is not None:
        init.init_weights(
            model, infos, parametrization, init_std, base_width, torch.Generator().manual_seed(seed)
        )
    if scale_readout:
        mult = parametrization.multipliers(width, base_width, alpha_out=alpha_out).output
        _hook_readouts(model, infos, tuple(readout), mult)
    hp = HParams(lr=lr, weight_decay=weight_decay)
    return optim.param_groups(model, infos, hp, parametrization, optimizer, eps=eps)


def _hook_readouts(
    model: nn.Module, infos: dict[str, ParamInfo], readout: tuple[str, ...], mult: float
) -> None:
    """Multiply the input of each readout module by ``mult`` (:mod:`mutune.hooks`, the same hooks
    as the CLI's): a readout bias keeps its size, and a Linear tied to the embedding is a readout."""
    try:
        owners = hooks.readout_modules(model, infos, readout)
    except ShapeError as e:
        raise SpecError(e.arg if e.arg.startswith("readout[") else "scale_readout", str(e)) from None
    if "" in owners:
        raw = [n for n, i in infos.items() if i.role == "readout" and i.owners == ("",)]
        raise SpecError(
            "scale_readout",
            f"the model itself holds the readout weight {raw}, so no hook can scale its input; multiply "
            f"its logits by α_out/m ({mult:.4g}) in your forward and pass scale_readout=False. If it is "
            "a table rather than a readout (a position embedding), pass out_features=<output size>",
        )
    hooks.hook_readouts(model, owners, mult)


from . import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.X(...) calls X.X(...)
