"""Model construction through the family registry: build, classify, initialise.

``build`` makes an uninitialised model at any width (it is also what µP classification and FLOP
planning call on the meta device); ``create`` makes the real thing: built on the device,
initialised from the seed by the µP/SP rules, with the family's own touches (a zero query).
The families themselves (``gpt``, ``mlp``, ``factory``) are registered in
:mod:`mutune.config.families`; nothing here branches on their names, nor on a parametrization's or
an axis's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import ModuleType

import torch
from torch import nn

from ..config import FAMILIES, HParams, Spec, SpecError, axes
from ..mup import init, optim, shapes
from ..mup.axes import AXES
from ..mup.parametrizations import Multipliers, Parametrization
from ..mup.parametrizations import get as get_parametrization
from ..mup.shapes import ParamInfo


def family(spec: Spec) -> ModuleType:
    """The module implementing ``spec``'s model family."""
    return FAMILIES[spec.model.family].module()


def parametrization(spec: Spec) -> Parametrization:
    """The spec's parametrization object (its rule table, multipliers, clipping rule)."""
    return get_parametrization(spec.model.parametrization)


def depth_mult(spec: Spec) -> float:
    """m_L = depth / base_depth where depth scaling applies (:func:`mutune.config.axes.mult`), else 1."""
    return axes.mult(spec, "depth")


def forward_multipliers(spec: Spec, hp: HParams | None = None, width: int | None = None) -> Multipliers:
    """The forward multipliers a model of ``spec`` applies at ``width`` (α_in, α_out/m, attention,
    residual): one computation for the model itself, its plan.yaml and ``mutune inspect``."""
    hp, m = hp or spec.hparams, spec.model
    width = m.width if width is None else width
    fam = family(spec)
    heads = {}
    if hasattr(fam, "head_dims"):  # a family that applies the attention multiplier itself
        heads = {
            "head_dim": fam.head_dims(spec, width)[1],
            "base_head_dim": fam.head_dims(spec, m.base_width)[1],
        }
    return parametrization(spec).multipliers(
        width,
        m.base_width,
        alpha_in=hp.alpha_in,
        alpha_out=hp.alpha_out,
        alpha_attn=hp.alpha_attn,
        alpha_res=hp.alpha_res,
        alpha_res_attn_ratio=hp.alpha_res_attn_ratio,
        alpha_ffn_act=hp.alpha_ffn_act,
        depth_mult=depth_mult(spec),
        depth_alpha=m.depth_alpha,
        **heads,
    )


def build(spec: Spec, hp: HParams, vocab_size: int, width: int | None = None) -> nn.Module:
    """The model at ``width`` (default ``spec.model.width``), on the current default device, not initialised."""
    width = spec.model.width if width is None else width
    return family(spec).build(spec, hp, vocab_size, width)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated units (a transformer's blocks, an MLP's hidden layers): the children of
    every outermost ``nn.ModuleList``. FSDP shards each one as a unit; activation checkpointing
    recomputes them. A ModuleList inside a block (a mixture's experts) is part of its block: FSDP2
    must shard a unit's children before the unit, and the blocks' parameters must not be counted twice.
    """
    out: list[nn.Module] = []

    def visit(mod: nn.Module) -> None:
        for child in mod.children():
            if isinstance(child, nn.ModuleList):
                out.extend(child)
            else:
                visit(child)

    visit(model)
    return out


def readout_names(spec: Spec) -> tuple[str, ...]:
    return tuple(family(spec).readout_names(spec))


def router_names(spec: Spec) -> tuple[str, ...]:
    """The modules whose width -> fixed-size weight gates a mixture inside the network (role
    ``router``); none for a family without them."""
    names = getattr(family(spec), "router_names", None)
    return tuple(names(spec)) if names is not None else ()


def axis_refusal(spec: Spec, axis: str) -> tuple[str, str] | None:
    """(the key at fault, why) where ``spec``'s model cannot apply ``axis`` as the spec asks; None
    where it can. The spec decides
    whether an axis's rules apply (:func:`mutune.config.axes.why_not`: depth needs α > 0, residual
    blocks, an optimizer with a depth rule; where they do not, a target at another depth trains as
    asked, with a warning); the model decides whether it can do what they say (a factory that does
    not take ``residual_mult`` cannot scale its residual branches): its family's ``axis_refusal``."""
    impl = family(spec)
    return impl.axis_refusal(spec, axis) if hasattr(impl, "axis_refusal") else None


def check_axes(spec: Spec) -> None:
    """The one place that refuses a spec whose model cannot apply an axis it is planned or trained
    along (depth without ``residual_mult``): called by every command that plans or trains (search,
    transfer and its plan, inspect, the coord check across depths, every run)."""
    for axis in AXES.values():
        refused = axis_refusal(spec, axis.name)
        if refused:
            raise SpecError(*refused)


def validate(spec: Spec, hp: HParams, vocab_size: int) -> None:
    """Everything about the model that can be wrong, checked on the meta device (nothing allocated):
    a factory that does not import or build, an axis it cannot apply, width dims µP cannot handle,
    a readout not found."""
    family(spec).validate(spec)
    check_axes(spec)
    with torch.device("meta"):
        build(spec, hp, vocab_size)


_CLASSIFIED: dict[str, dict[str, ParamInfo]] = {}  # the last few classifications (they are plain data)


def classify(spec: Spec, hp: HParams, vocab_size: int, width: int | None = None) -> dict[str, ParamInfo]:
    """:func:`mutune.shapes.classify` of the spec's model, its errors naming the spec's keys.

    Remembered for the last few (model section, hyperparameters, output size, width): a run builds
    its model and classifies it more than once, and a raw parameter's classification runs a forward."""
    width = spec.model.width if width is None else width
    key = repr((spec.model, spec.data, hp, id(parametrization(spec)), vocab_size, width))
    if key not in _CLASSIFIED:
        if len(_CLASSIFIED) >= 16:
            _CLASSIFIED.pop(next(iter(_CLASSIFIED)))
        _CLASSIFIED[key] = _classify(spec, hp, vocab_size, width)
    return dict(_CLASSIFIED[key])


def _classify(spec: Spec, hp: HParams, vocab_size: int, width: int) -> dict[str, ParamInfo]:
    m = spec.model
    impl = family(spec)
    try:
        infos = shapes.classify(
            lambda w: impl.bare(spec, hp, vocab_size, w),
            width,
            m.base_width,
            readout_names(spec),
            out_features=vocab_size,  # the vocabulary, or a classifier's classes: the output size
            routers=router_names(spec),
            roles=getattr(m, "roles", None),
            # a family with raw parameters says how to run one forward, so their use decides their role
            forward=impl.watch(spec, hp, vocab_size) if hasattr(impl, "watch") else None,
        )
        rules = parametrization(spec)
        for axis in AXES.values():  # the axes found by something other than shape (depth: by block)
            mult, size = axes.mult(spec, axis), axes.value(spec, axis)
            if axis.found_by != "shape" and (mult != 1.0 or rules.uses(axis.size)):
                at = lambda n, key=axis.key: impl.bare(spec.edit({key: n}), hp, vocab_size, width)  # noqa: E731
                arg = axis.key.partition(".")[2]  # model.n_experts: errors name n_experts
                members = shapes.FINDERS[axis.found_by](at, size, arg)
                infos = shapes.along(infos, axis.name, members, mult, size)
        return infos
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
    init.init_weights(
        model,
        infos,
        parametrization(spec),
        hp.init_std,
        m.base_width,
        gen,
        zero_init_readout=m.zero_init_readout,
    )
    family(spec).after_init(model, spec)
    return model, infos


def param_groups(spec: Spec, model: nn.Module, infos: dict[str, ParamInfo], hp: HParams) -> list[dict]:
    """The optimizer's µP param groups for the spec's parametrization, optimizer, ε and depth α."""
    m, t = spec.model, spec.train
    return optim.param_groups(
        model, infos, hp, parametrization(spec), t.optimizer, eps=t.eps, depth_alpha=m.depth_alpha
    )


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build a model whose parameters live on the meta device (each moved there as it is registered,
    so at most one, uninitialised, ever exists in memory) while its buffers are computed for real."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def create_sharded(
    spec: Spec,
    hp: HParams,
    vocab_size: int,
    device: torch.device | str,
    shard: Callable[[nn.Module], object],
    seed: int | None = None,
) -> tuple[nn.Module, dict[str, ParamInfo]]:
    """:func:`create` for a model too big for one device: built on meta, ``shard``-ed (FSDP2's
    ``fully_shard``: each rank then owns 1/N of every parameter), materialised on ``device`` shard
    by shard, then initialised by the same rules, generator and order as :func:`create`, so the
    weights are the same numbers as a one-process run's.

    No rank holds the whole model. Each parameter is drawn whole on every rank, one at a time, and
    each rank keeps its shard: the peak is the largest parameter, and the price is that every rank
    draws every parameter (the CPU generator cannot skip ahead to a shard's offset, and DTensor's own
    random ops on a CPU mesh draw each shard from the same stream, giving equal shards).
    """
    m = spec.model
    infos = classify(spec, hp, vocab_size)
    with _parameters_on_meta():
        model = build(spec, hp, vocab_size)
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # to_empty leaves them garbage
    shard(model)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    gen = torch.Generator().manual_seed(spec.seed if seed is None else seed)
    init.init_weights(
        model,
        infos,
        parametrization(spec),
        hp.init_std,
        m.base_width,
        gen,
        zero_init_readout=m.zero_init_readout,
    )
    family(spec).after_init(model, spec)
    return model, infos
