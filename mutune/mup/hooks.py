"""µP's forward multipliers on a model someone else wrote: α_in and α_out/m as forward hooks.

Both ways of bringing a model, ``model.family: factory`` and :func:`mutune.parametrize`, use this
module, so the two give the same logits:

- α_out/m multiplies the *input* of every module that uses a readout weight (an ``nn.Linear`` or a
  convolution): exactly what mup's ``MuReadout`` does, so a readout bias is not divided by m. A
  weight tied to the embedding is a readout where a Linear uses it (nanoGPT's and GPT-2's
  ``lm_head``), and is hooked there.
- α_in multiplies the output of every module holding an embedding / input weight, once: where
  such modules nest (Hugging Face ViT's ``embeddings`` holds the position table and contains the
  patch projection), only the outermost is hooked, so everything inside it gets α_in exactly once;
- α_out/m likewise once: a readout weight the model itself registers and a Linear also holds (a
  raw table tied into ``lm_head``) is scaled at the Linear's input only, not again on the logits.

Anything that cannot be hooked safely raises :class:`~mutune.shapes.ShapeError` naming the
argument at fault (``readout``, ``readout[i]``; empty for the model itself), never a silent SP.
This module imports nothing of the spec.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .shapes import ParamInfo, ShapeError

SCALABLE = (nn.Linear, nn.modules.conv._ConvNd)  # modules whose input scaling is a scaling of W·x only


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def readout_modules(model: nn.Module, infos: dict[str, ParamInfo], named: tuple[str, ...] = ()) -> list[str]:
    """The modules whose input gets α_out/m: those using a readout weight ("" is the model itself)."""
    modules = dict(model.named_modules())
    readouts = {n: i for n, i in infos.items() if i.role == "readout" or i.tied_readout}
    for i, name in enumerate(named):
        mod_name = name if name in modules else name.rpartition(".")[0]
        if not any(
            o == mod_name or o.startswith(mod_name + ".") for r in readouts.values() for o in r.owners
        ):
            raise ShapeError(
                f"'{name}' holds no weight that maps the width to a fixed size (a readout), so α_out/m "
                "would scale the wrong thing",
                f"readout[{i}]",
            )
    if not readouts:
        raise ShapeError(
            "no readout found: no weight maps the width to a fixed size (an nn.Linear(width, vocab)). If "
            "the logits reuse the embedding weight (F.linear(x, emb.weight)), compute them with an "
            "nn.Linear whose weight is tied to it (head.weight = emb.weight) so mutune can apply α_out/m",
            "readout",
        )
    chosen: list[str] = []
    for pname, info in readouts.items():
        # where the weight acts as a readout: its Linear holders (for a tied weight, not the Embedding)
        holders = [o for o in info.owners if not isinstance(_module(model, o), nn.Embedding)]
        if any(o and isinstance(_module(model, o), SCALABLE) for o in holders):
            holders = [o for o in holders if o]  # a Linear uses it: the model merely registers it too
        if not holders:
            raise ShapeError(
                f"'{pname}' is tied to a readout but only nn.Embedding modules hold it; an Embedding's "
                "forward is the lookup, not the logits. Compute the logits with an nn.Linear whose "
                "weight is tied to the embedding, so mutune can apply α_out/m",
                "readout",
            )
        for owner in holders:
            mod = _module(model, owner)
            if owner and not isinstance(mod, SCALABLE):
                raise ShapeError(
                    f"the readout weight '{pname}' is held by {type(mod).__name__} '{owner}', whose forward "
                    "mutune cannot scale safely (it could normalise its input, and α_out/m would vanish); "
                    "compute the logits with an nn.Linear",
                    "readout",
                )
            if owner not in chosen:
                chosen.append(owner)
    return chosen


def input_modules(model: nn.Module, infos: dict[str, ParamInfo]) -> tuple[list[str], list[str]]:
    """(modules whose output gets α_in, input weights held by the model itself that no hook reaches)."""
    found: list[str] = []
    unreached: list[str] = []
    for name, info in infos.items():
        if info.role not in ("embedding", "input"):
            continue
        owner = next((o for o in info.owners if isinstance(_module(model, o), nn.Embedding)), info.owners[0])
        if not owner:
            unreached.append(name)
        elif owner not in found:
            found.append(owner)
    # nested holders (an embeddings module holding a table and containing the patch projection): the
    # outermost one's output already carries the inner one's, so only it is hooked (α_in once)
    outermost = [o for o in found if not any(o.startswith(f + ".") for f in found if f != o)]
    return outermost, unreached


def _scale_input(mult: float):
    def pre_hook(module: nn.Module, args):
        module._mutune_calls = getattr(module, "_mutune_calls", 0) + 1
        return (args[0] * mult, *args[1:])

    return pre_hook


def _scale_output(mult: float, error: Callable[[str], Exception]):
    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor):
            raise error(
                f"{type(module).__name__} holds an input weight but returns {type(output).__name__}; "
                "mutune applies α_in to a tensor output"
            )
        return output * mult

    return hook


def hook_readouts(model: nn.Module, owners: list[str], mult: float) -> None:
    """Multiply the input of each named readout module by ``mult``, replacing a hook an earlier call
    left (so calling twice does not multiply twice). A model that is its own readout ("") gets the
    attribute ``_mutune_root_output_mult`` instead, for its caller to apply to the logits."""
    for owner in owners:
        if not owner:
            model._mutune_root_output_mult = mult
            continue
        mod = _module(model, owner)
        old = getattr(mod, "_mutune_readout_hook", None)
        if old is not None:
            old.remove()
        mod._mutune_readout_hook = mod.register_forward_pre_hook(_scale_input(mult))


def hook_inputs(
    model: nn.Module, owners: list[str], mult: float, error: Callable[[str], Exception] = TypeError
) -> None:
    """Multiply the output of each named input module by ``mult`` (replacing an earlier hook); a
    module that returns no tensor raises ``error(message)`` when it runs."""
    for owner in owners:
        mod = _module(model, owner)
        old = getattr(mod, "_mutune_input_hook", None)
        if old is not None:
            old.remove()
        mod._mutune_input_hook = mod.register_forward_hook(_scale_output(mult, error))


def uncalled_readouts(model: nn.Module, owners: tuple[str, ...]) -> list[str]:
    """Readout modules whose hook never ran (the model bypassed them, e.g. F.linear(x, head.weight)),
    so α_out/m was never applied. Call after a forward pass."""
    return [name for name in owners if name and not getattr(_module(model, name), "_mutune_calls", 0)]
