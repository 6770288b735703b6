"""Bring your own model: ``model.family: factory`` with ``model.factory: "package.module:function"``.

The contract (docs/mup.md has the long form and an example):

- ``function(width: int, **model.factory_kwargs) -> nn.Module``. mutune also passes ``vocab_size``,
  ``seq_len`` and ``alpha_attn`` when the function names them as parameters and ``factory_kwargs``
  does not set them. The same parameter names must exist at every width.
- ``model(idx) -> logits``: ``idx`` is a ``(B, T)`` LongTensor of tokens; the logits are either
  ``(B, T, vocab)`` (next token at every position, like a GPT) or ``(B, vocab)`` (the token after the
  window, like the MLP). mutune computes the cross-entropy; the model never sees the targets.

What mutune does to the model, so that it is µP without edits to the user's code:

- it builds it at ``base_width`` and ``2 * base_width`` on the meta device and classifies every
  parameter from the shape difference (:func:`mutune.shapes.classify`);
- it re-initialises every parameter by its µP rule (the factory's own init is overwritten, except
  for 1-D parameters that are neither norms nor biases) and builds the per-group optimizer;
- it multiplies the output of every module that holds an embedding / input weight by α_in (a
  forward hook), and the *input* of every readout ``nn.Linear`` by α_out/m (a forward pre-hook,
  exactly what mup's ``MuReadout`` does, so a readout bias is not divided by m);
- attention scaling stays the model's business (µP wants 1/d_head when the head dim grows with
  width; pass ``alpha_attn`` through if you want it searched). The coord check catches a wrong one.

The readout is inferred from the shapes (a weight mapping the width to a fixed size, or a Linear
sharing an embedding's weight); name it in ``model.readout`` when there are several candidates.
Anything mutune cannot make µP is a :class:`SpecError`, never a silent fall back to SP.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import sys
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HParams, Spec, SpecError
from ..flops import Workload
from ..multipliers import multipliers
from ..shapes import ParamInfo
from . import depth_mult

AUTO_KWARGS = ("vocab_size", "seq_len", "alpha_attn", "depth", "residual_mult")
DEPTH_KWARGS = ("depth", "residual_mult")  # what a factory must take for depth scaling (CompleteP)


@functools.lru_cache(maxsize=32)
def load(path: str) -> Callable[..., nn.Module]:
    """Import ``package.module:function`` (never eval'd). The current directory is importable too,
    so ``examples.my_model:build`` works from a checkout as it does with ``python -m``."""
    module_name, _, attr = path.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SpecError(
            "model.factory", f"cannot import module '{module_name}' ({e}); is it installed or in this folder?"
        ) from None
    except (Exception, SystemExit) as e:
        raise user_code_error(f"importing '{module_name}'", e) from e
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            hint = difflib.get_close_matches(part, dir(obj), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise SpecError("model.factory", f"'{module_name}' has no attribute '{attr}'{suggestion}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError("model.factory", f"'{path}' is not callable")
    return obj  # type: ignore[return-value]


def user_code_error(call: str, e: BaseException) -> SpecError:
    """The user's factory or forward raised (or called ``sys.exit``): one line naming ``model.factory``
    and their exception; ``--debug`` shows their traceback (it is chained)."""
    what = f"called sys.exit({e.code})" if isinstance(e, SystemExit) else f"raised {type(e).__name__}: {e}"
    return SpecError("model.factory", f"{call} {what}".splitlines()[0])


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def call_kwargs(spec: Spec, hp: HParams, vocab_size: int) -> dict:
    """``factory_kwargs`` plus the automatic ones the function names (see the module doc)."""
    m = spec.model
    kwargs = dict(m.factory_kwargs)
    named = _parameters(load(m.factory))
    m_L = depth_mult(spec)
    auto = {
        "vocab_size": vocab_size,
        "seq_len": m.seq_len,
        "alpha_attn": hp.alpha_attn,
        "depth": m.depth,
        "residual_mult": m_L**-m.depth_alpha if m_L != 1.0 else 1.0,
    }
    for key in AUTO_KWARGS:
        if key in named and key not in kwargs:
            kwargs[key] = auto[key]
    return kwargs


def construct(spec: Spec, hp: HParams, vocab_size: int, width: int) -> nn.Module:
    """Call the factory at ``width``, on the current default device; no µP applied yet."""
    fn = load(spec.model.factory)
    try:
        model = fn(width, **call_kwargs(spec, hp, vocab_size))
    except TypeError as e:
        raise SpecError(
            "model.factory_kwargs", f"{spec.model.factory}(width={width}, ...) rejected its arguments: {e}"
        ) from None
    except (Exception, SystemExit) as e:  # the user's code failed: their error, named, not ours
        raise user_code_error(f"{spec.model.factory}(width={width}, ...)", e) from e
    if not isinstance(model, nn.Module):
        raise SpecError(
            "model.factory", f"{spec.model.factory} returned {type(model).__name__}, expected an nn.Module"
        )
    return model


def validate(spec: Spec) -> None:
    """Checks that need the imported function: a searched α_attn it would never see."""
    named = _parameters(load(spec.model.factory))
    if "alpha_attn" in spec.search.space and "alpha_attn" not in named:
        raise SpecError(
            "search.space.alpha_attn",
            f"{spec.model.factory} has no alpha_attn parameter, so searching it would change nothing; "
            "remove it from search.space or let the factory take alpha_attn",
        )
    m = spec.model
    if (m.base_depth is not None and m.depth_alpha > 0) or depth_mult(spec) != 1.0:
        missing = [k for k in DEPTH_KWARGS if k not in named]
        if missing or "depth" in m.factory_kwargs:
            raise SpecError(
                "model.factory",
                f"depth scaling (model.base_depth, model.depth_alpha) passes depth= (model.depth) and "
                f"residual_mult= (each residual branch's multiplier) to the factory; {m.factory} "
                + (
                    f"does not take {', '.join(missing)}"
                    if missing
                    else "gets depth from model.factory_kwargs"
                )
                + ": take both, build `depth` blocks and compute x + residual_mult * branch(x)",
            )


# ---------------------------------------------------------------------------------------------
# Instrumenting the model


def _lm_forward(self: nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None):
    """mutune's training contract, ``(logits, loss)``, around the user's ``forward(idx) -> logits``."""
    try:
        logits = type(self).forward(self, idx)
    except (SpecError, torch.OutOfMemoryError):
        raise
    except (Exception, SystemExit) as e:
        raise user_code_error(f"{type(self).__name__}.forward(idx)", e) from e
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (2, 3) or logits.shape[0] != idx.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(
            "model.factory",
            f"forward(idx) with idx of shape {tuple(idx.shape)} returned {got}; expected logits of shape "
            "(B, T, vocab) or (B, vocab)",
        )
    root_mult = getattr(self, "_mutune_root_output_mult", None)
    if root_mult is not None:
        logits = logits * root_mult
    if targets is None:
        return logits, None
    if logits.ndim == 3:
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    else:
        loss = F.cross_entropy(logits.float(), targets[:, -1])
    return logits, loss


def _scale_output(mult: float):
    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor):
            raise SpecError(
                "model.factory",
                f"{type(module).__name__} holds an input weight but returns {type(output).__name__}; "
                "mutune applies α_in to a tensor output",
            )
        return output * mult

    return hook


def _scale_input(mult: float):
    def pre_hook(module: nn.Module, args):
        module._mutune_calls = getattr(module, "_mutune_calls", 0) + 1
        return (args[0] * mult, *args[1:])

    return pre_hook


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def readout_modules(model: nn.Module, infos: dict[str, ParamInfo], named: list[str]) -> list[str]:
    """The modules whose input gets α_out/m: named ones, or those holding a readout weight."""
    modules = dict(model.named_modules())
    readout_params = {n: i for n, i in infos.items() if i.role == "readout" or i.tied_readout}
    for i, name in enumerate(named):  # (shapes.classify made sure that each name exists)
        mod_name = name if name in modules else name.rpartition(".")[0]
        if not any(
            o == mod_name or o.startswith(mod_name + ".") for i2 in readout_params.values() for o in i2.owners
        ):
            raise SpecError(
                f"model.readout[{i}]",
                f"'{name}' holds no weight that maps the width to a fixed size (a readout), so α_out/m "
                "would scale the wrong thing",
            )
    if not readout_params:
        raise SpecError(
            "model.readout",
            "no readout found: no weight maps the width to a fixed size (an nn.Linear(width, vocab)). If "
            "the logits reuse the embedding weight (F.linear(x, emb.weight)), compute them with an "
            "nn.Linear whose weight is tied to it (head.weight = emb.weight) so mutune can apply α_out/m",
        )
    chosen: list[str] = []
    for pname, info in readout_params.items():
        # where the weight acts as a readout: its Linear holders (for a tied weight, not the Embedding)
        holders = [o for o in info.owners if not isinstance(_module(model, o), nn.Embedding)]
        if not holders:
            raise SpecError(
                "model.readout",
                f"'{pname}' is tied to a readout but only nn.Embedding modules hold it; an Embedding's "
                "forward is the lookup, not the logits. Compute the logits with an nn.Linear whose "
                "weight is tied to the embedding, so mutune can apply α_out/m",
            )
        for owner in holders:
            mod = _module(model, owner)
            if owner and not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                raise SpecError(
                    "model.readout",
                    f"the readout weight '{pname}' is held by {type(mod).__name__} '{owner}', whose forward "
                    "mutune cannot scale safely; compute the logits with an nn.Linear",
                )
            if owner not in chosen:
                chosen.append(owner)
    return chosen


def instrument(
    model: nn.Module, infos: dict[str, ParamInfo], spec: Spec, hp: HParams, width: int
) -> nn.Module:
    """Give a factory model mutune's forward contract and the α_in, α_out/m multipliers (in place)."""
    m = spec.model
    mult = multipliers(m.parametrization, width, m.base_width, alpha_in=hp.alpha_in, alpha_out=hp.alpha_out)
    if m.zero_init_readout:
        tied = [n for n, i in infos.items() if i.tied_readout]
        if tied:
            raise SpecError(
                "model.zero_init_readout", f"'{tied[0]}' is tied to the embedding; zeroing it zeroes both"
            )
    # α_in on whatever module holds an input weight
    inputs = []
    for name, info in infos.items():
        if info.role not in ("embedding", "input"):
            continue
        owner = next((o for o in info.owners if isinstance(_module(model, o), nn.Embedding)), info.owners[0])
        if not owner:
            raise SpecError(
                "model.factory",
                f"the input weight '{name}' is a parameter of the model itself; put it in a submodule "
                "(nn.Embedding / nn.Linear) so mutune can apply α_in to its output",
            )
        if owner not in inputs:
            inputs.append(owner)
    for owner in inputs:
        _module(model, owner).register_forward_hook(_scale_output(mult.input))
    # α_out/m on the readout's input
    readouts = readout_modules(model, infos, list(m.readout))
    for owner in readouts:
        if owner:
            _module(model, owner).register_forward_pre_hook(_scale_input(mult.output))
        else:
            model._mutune_root_output_mult = mult.output
    model._mutune_readouts = tuple(readouts)
    model._mutune_inputs = tuple(inputs)
    model.forward = types.MethodType(_lm_forward, model)
    return model


def uncalled_readouts(model: nn.Module) -> list[str]:
    """Readout modules whose pre-hook never ran (the model bypassed them, e.g. F.linear(x, head.weight)),
    so α_out/m was never applied. Call after a forward pass."""
    return [
        name
        for name in getattr(model, "_mutune_readouts", ())
        if name and not getattr(_module(model, name), "_mutune_calls", 0)
    ]


# ---------------------------------------------------------------------------------------------
# The family's registry interface (see mutune.registry)

bare = construct


def build(spec: Spec, hp: HParams, vocab_size: int, width: int) -> nn.Module:
    """The user's model at ``width``, instrumented with mutune's forward contract and multipliers."""
    from . import classify

    model = construct(spec, hp, vocab_size, width)
    return instrument(model, classify(spec, hp, vocab_size, width), spec, hp, width)


def readout_names(spec: Spec) -> tuple[str, ...]:
    return tuple(spec.model.readout)


def after_init(model: nn.Module, spec: Spec) -> None:
    return None


def coord_seq_len(spec: Spec, seq_len: int) -> int:
    return min(seq_len, spec.model.seq_len)


def workload(spec: Spec, model: nn.Module, width: int, vocab_size: int) -> Workload:
    """Measured, not modelled: one forward pass of a single sequence on the meta device under
    ``FlopCounterMode`` (matmuls, convolutions and attention), times 3 for forward + backward; the
    activations are approximated by every leaf module's output size in that pass."""
    m, t = spec.model, spec.train
    fwd_flops, act_per_seq, logits_per_seq, per_position = _measure(model, m.seq_len)
    tokens_per_step = t.batch_size * (m.seq_len if per_position else 1)
    return Workload(
        flops_per_token=3.0 * fwd_flops * t.batch_size / tokens_per_step,
        tokens_per_step=tokens_per_step,
        activation_bytes=act_per_seq * t.batch_size,
        logits_bytes=2 * 4 * t.batch_size * logits_per_seq,
    )


def _measure(model: nn.Module, seq_len: int) -> tuple[float, int, int, bool]:
    """Forward FLOPs of one sequence, its activation bytes at 16 bit, its logits' elements, and
    whether it predicts every position: one pass on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    sizes: list[int] = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [mod.register_forward_hook(record) for mod in model.modules() if not list(mod.children())]
    try:
        with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
            logits, _ = model(torch.zeros(1, seq_len, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    return float(counter.get_total_flops()), 2 * sum(sizes), logits.numel(), logits.ndim == 3
