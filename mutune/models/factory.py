"""Bring your own model: ``model.family: factory`` with ``model.factory: "package.module:function"``.

The contract (docs/mup.md §4 has the long form, docs/recipes.md nanoGPT and Hugging Face examples):

- ``function(width: int, **model.factory_kwargs) -> nn.Module``. mutune also passes ``vocab_size``,
  ``num_classes`` (the same number: the output size), ``seq_len``, ``alpha_attn``, ``depth`` and
  ``residual_mult`` when the function names them as parameters and ``factory_kwargs`` does not set
  them. The same parameter names must exist at every width.
- with ``model.task: classification``: the forward takes a batch of inputs from ``data.module``
  (``(B, ...)`` tensors, images say) and returns ``(B, classes)`` logits (alone, first in a tuple,
  or as ``.logits``); the loss is their cross-entropy against the labels.
- the model's forward takes a ``(B, T)`` LongTensor of tokens as its first argument, and also
  ``targets`` (the next tokens, same shape) when its signature names a ``targets`` parameter
  (nanoGPT's convention: without targets it returns the last position only). It may return the
  logits, a tuple whose first element is the logits (nanoGPT's ``(logits, loss)``), or an object
  with a ``.logits`` attribute (a Hugging Face ``CausalLMOutput``). The logits are ``(B, T, vocab)``
  (next token at every position) or ``(B, vocab)`` (the token after the window). mutune computes
  the cross-entropy from the logits itself; a loss the model returns is ignored.

What mutune does to the model, so that it is µP without edits to the user's code:

- it builds it at ``base_width`` and ``2 * base_width`` on the meta device and classifies every
  parameter from the shape difference (:func:`mutune.mup.shapes.classify`), a raw parameter by how
  one forward on an example input uses it (:mod:`mutune.mup.uses`), ``model.roles`` over both;
- it re-initialises every parameter by its µP rule (the factory's own init is overwritten, except
  for 1-D parameters that are neither norms nor biases) and builds the per-group optimizer;
- it multiplies the output of every module that holds an embedding / input weight by α_in and the
  *input* of every readout module by α_out/m (:mod:`mutune.mup.hooks`; a readout bias is not divided
  by m, and a readout tied to the embedding is hooked where a Linear uses it);
- attention scaling stays the model's business (µP wants 1/d_head when the head dim grows with
  width; pass ``alpha_attn`` through if you want it searched). The coord check catches a wrong one.

The readout is inferred from the shapes (a weight mapping the width to a fixed size, or a Linear
sharing an embedding's weight); name it in ``model.readout`` when there are several candidates.
Anything mutune cannot make µP is a :class:`SpecError`, never a silent fall back to SP.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HParams, Spec, SpecError, axes
from ..flops import Workload
from ..mup import hooks
from ..mup.shapes import ParamInfo, ShapeError
from . import depth_mult, forward_multipliers

AUTO_KWARGS = ("vocab_size", "num_classes", "seq_len", "alpha_attn", "depth", "residual_mult")


@functools.lru_cache(maxsize=32)
def load(path: str) -> Callable[..., nn.Module]:
    """Import ``package.module:function`` or ``file.py:function`` (never eval'd). The current directory
    is importable too, so ``examples.my_model:build`` works from a checkout as it does with
    ``python -m``; a file is loaded from its path (a spec file's relative path is made absolute when
    the spec loads, so it works from any folder)."""
    module_name, _, attr = path.rpartition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = (
            _from_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
        )
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


def _from_file(file: str) -> types.ModuleType:
    """A factory module given by its file, imported under a name of its own (registered, so that its
    classes pickle and spawned workers load the same file)."""
    p = Path(file).expanduser().resolve()
    if not p.is_file():
        raise SpecError("model.factory", f"file not found: {p}")
    name = f"mutune_factory_{p.stem}_{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


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
        "num_classes": vocab_size,
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


def axis_refusal(spec: Spec, axis: str) -> tuple[str, str] | None:
    """(``model.factory``, why) where the user's model cannot apply ``axis`` as the spec asks: the part of
    :func:`mutune.models.check_axes` only the imported function can tell. Depth: a spec at a depth
    other than its base needs ``depth=``; depth scaling (CompleteP: ``model.base_depth`` with α > 0,
    or m_L != 1) needs ``residual_mult=`` too, or plan.yaml and the LRs would say one thing and
    the forward do another."""
    if axis != "depth":
        return None
    m = spec.model
    named = _parameters(load(m.factory))
    moved = axes.value(spec, "depth") != axes.base(spec, "depth")
    scaled = not axes.why_not(spec, "depth") and (m.base_depth is not None or axes.mult(spec, "depth") != 1.0)
    need = [k for k, wanted in (("depth", moved or scaled), ("residual_mult", scaled)) if wanted]
    missing = [k for k in need if k not in named]
    if not missing and not (need and "depth" in m.factory_kwargs):
        return None
    what = f"depth {m.depth}" + (
        f" with depth scaling (m_L = {axes.mult(spec, 'depth'):g})" if scaled else ""
    )
    lacks = f"does not take {' or '.join(missing)}" if missing else "gets depth from model.factory_kwargs"
    return "model.factory", (
        f"{m.factory} cannot apply {what}: it {lacks}; it must accept "
        + (
            "depth= (build that many blocks) and residual_mult= (compute x + residual_mult * branch(x))"
            if scaled
            else "depth= (build that many blocks)"
        )
    )


# ---------------------------------------------------------------------------------------------
# Instrumenting the model


@functools.lru_cache(maxsize=64)
def takes_targets(cls: type) -> bool:
    """Whether ``cls.forward`` names a ``targets`` parameter (nanoGPT's convention)."""
    return "targets" in _parameters(cls.forward)


def logits_of(out: object, idx: torch.Tensor, ndims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """The logits in whatever a forward returned: a tensor, ``(logits, ...)``, or ``.logits``."""
    logits = out
    if isinstance(out, (tuple, list)) and out:
        logits = out[0]
    elif isinstance(out, Mapping) and "logits" in out:
        logits = out["logits"]
    elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        logits = out.logits
    if not isinstance(logits, torch.Tensor) or logits.ndim not in ndims or logits.shape[0] != idx.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(out).__name__
        want = "(B, classes)" if ndims == (2,) else "(B, T, vocab) or (B, vocab)"
        raise SpecError(
            "model.factory",
            f"forward(x) with x of shape {tuple(idx.shape)} returned {got}; expected logits of shape "
            f"{want}, alone, first in a tuple, or as .logits",
        )
    return logits


def _lm_forward(self: nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None):
    """mutune's training contract, ``(logits, loss)``, around the user's forward (module doc)."""
    try:
        if takes_targets(type(self)):  # nanoGPT gives every position's logits only when given targets
            tgt = targets if targets is not None else torch.zeros_like(idx)
            out = type(self).forward(self, idx, targets=tgt)
        else:
            out = type(self).forward(self, idx)
    except (SpecError, torch.OutOfMemoryError):
        raise
    except (Exception, SystemExit) as e:
        if idx.device.type == "meta":  # the FLOP count's meta pass falls back to a real forward
            raise
        raise user_code_error(f"{type(self).__name__}.forward(idx)", e) from e
    logits = logits_of(out, idx)
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


def _classify_forward(self: nn.Module, x: torch.Tensor, targets: torch.Tensor | None = None):
    """mutune's training contract for a classifier (``model.task: classification``): ``(logits, loss)``
    with the loss the cross-entropy of the (B, classes) logits against the (B,) labels."""
    try:
        out = type(self).forward(self, x)
    except (SpecError, torch.OutOfMemoryError):
        raise
    except (Exception, SystemExit) as e:
        if x.device.type == "meta":
            raise
        raise user_code_error(f"{type(self).__name__}.forward(x)", e) from e
    logits = logits_of(out, x, ndims=(2,))
    root_mult = getattr(self, "_mutune_root_output_mult", None)
    if root_mult is not None:
        logits = logits * root_mult
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits.float(), targets)


def classifies(spec: Spec) -> bool:
    return getattr(spec.model, "task", "next_token") == "classification"


def example_input(spec: Spec, device: torch.device | str) -> torch.Tensor:
    """What one forward is run on to measure or watch it: a sequence of ``model.seq_len`` tokens, or one
    input of the data module."""
    if classifies(spec):
        from .. import data

        x = data.example_input(spec.data)
        return torch.zeros(x.shape, dtype=x.dtype, device=device)
    return torch.zeros(1, spec.model.seq_len, dtype=torch.long, device=device)


def watch(spec: Spec, hp: HParams, vocab_size: int) -> Callable[[nn.Module], object]:
    """One forward of a bare (uninstrumented) model on an example input made where its parameters
    are, for :func:`mutune.mup.shapes.classify` to see how it uses its raw parameters."""

    def run(model: nn.Module) -> object:
        device = next(model.parameters()).device
        x = example_input(spec, device)
        if not classifies(spec) and takes_targets(type(model)):
            return model(x, targets=torch.zeros_like(x))
        return model(x)

    return run


def _spec_error(key: str):
    return lambda message: SpecError(key, message)


def instrument(
    model: nn.Module, infos: dict[str, ParamInfo], spec: Spec, hp: HParams, width: int
) -> nn.Module:
    """Give a factory model mutune's forward contract and the α_in, α_out/m multipliers (in place)."""
    m = spec.model
    mult = forward_multipliers(spec, hp, width)
    if m.zero_init_readout:
        tied = [n for n, i in infos.items() if i.tied_readout]
        if tied:
            raise SpecError(
                "model.zero_init_readout", f"'{tied[0]}' is tied to the embedding; zeroing it zeroes both"
            )
    try:
        readouts = hooks.readout_modules(model, infos, tuple(m.readout))
    except ShapeError as e:
        raise SpecError(f"model.{e.arg}" if e.arg else "model.factory", str(e)) from None
    inputs, _ = hooks.input_modules(model, infos)  # (raw input tables are listed by `mutune inspect`)
    hooks.hook_inputs(model, inputs, mult.input, error=_spec_error("model.factory"))
    hooks.hook_readouts(model, readouts, mult.output)
    model._mutune_readouts = tuple(readouts)
    model._mutune_inputs = tuple(inputs)
    model.forward = types.MethodType(_classify_forward if classifies(spec) else _lm_forward, model)
    return model


def uncalled_readouts(model: nn.Module) -> list[str]:
    """Readout modules whose hook never ran (the model bypassed them, e.g. F.linear(x, head.weight)),
    so α_out/m was never applied. Call after a forward pass."""
    return hooks.uncalled_readouts(model, getattr(model, "_mutune_readouts", ()))


# ---------------------------------------------------------------------------------------------
# The family's registry interface (see mutune.config.families)

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


REAL_FORWARD_MAX_PARAMS = 50_000_000  # the fallback's model is built for real: at most ~200 MB
_measured: dict[str, tuple[float, int, int, bool]] = {}  # fallback measurements, per model and shape


def workload(spec: Spec, model: nn.Module, width: int, vocab_size: int) -> Workload:
    """Measured, not modelled: one forward pass of a single sequence under ``FlopCounterMode``
    (matmuls, convolutions and attention), times 3 for forward + backward; the activations are
    approximated by every leaf module's output size in that pass.

    The pass runs on the meta device (nothing allocated). A forward that needs real values there
    (``.item()``, ``torch.equal``, data-dependent shapes: torch's own ``TransformerEncoder`` and
    Hugging Face masks do) is measured on a real CPU copy instead when it has at most
    :data:`REAL_FORWARD_MAX_PARAMS` parameters; larger ones get FLOPs ``nan`` (unknown) and a
    warning. A plan or a search is never stopped by its accounting."""
    m, t = spec.model, spec.train
    try:
        fwd_flops, act_per_seq, logits_per_seq, per_position = _measure(model, spec, "meta")
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the meta pass falls back, never crashes
        fwd_flops, act_per_seq, logits_per_seq, per_position = _fallback(spec, model, width, vocab_size, e)
    tokens_per_step = t.batch_size * (m.seq_len if per_position else 1)
    return Workload(
        flops_per_token=3.0 * fwd_flops * t.batch_size / tokens_per_step,
        tokens_per_step=tokens_per_step,
        activation_bytes=act_per_seq * t.batch_size,
        logits_bytes=2 * 4 * t.batch_size * logits_per_seq,
    )


def _fallback(
    spec: Spec, meta_model: nn.Module, width: int, vocab_size: int, error: Exception
) -> tuple[float, int, int, bool]:
    key = repr((spec.model, width, vocab_size))
    if key in _measured:
        return _measured[key]
    why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    n_params = sum(p.numel() for p in meta_model.parameters())
    result: tuple[float, int, int, bool] | None = None
    if n_params <= REAL_FORWARD_MAX_PARAMS:
        try:
            with torch.device("cpu"):
                real = build(spec, spec.hparams, vocab_size, width)
            result = _measure(real, spec, "cpu")
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001
            why += f"; a real forward failed too ({type(e).__name__}: {e})"
    else:
        why += f"; {n_params:,} parameters is too many to measure with a real forward"
    if result is None:
        warnings.warn(
            f"FLOPs of {spec.model.factory} at width {width} are unknown (recorded as nan): its forward "
            f"cannot run on the meta device ({why})",
            stacklevel=2,
        )
        result = (float("nan"), 0, 0, True)
    _measured[key] = result
    return result


def _measure(model: nn.Module, spec: Spec, device: str) -> tuple[float, int, int, bool]:
    """Forward FLOPs of one sequence (one example for a classifier), its activation bytes at 16 bit,
    its logits' elements, and whether it predicts every position: one pass on ``device``."""
    from torch.utils.flop_counter import FlopCounterMode

    sizes: list[int] = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [mod.register_forward_hook(record) for mod in model.modules() if not list(mod.children())]
    was_training = model.training
    try:
        with torch.device(device), torch.no_grad(), FlopCounterMode(display=False) as counter:
            logits, _ = model(example_input(spec, device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return float(counter.get_total_flops()), 2 * sum(sizes), logits.numel(), logits.ndim == 3
