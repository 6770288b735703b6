"""What µP does to a spec's model, parameter by parameter: ``mutune inspect CONFIG [--to width=W]``.

For every parameter: its shape, the role mutune gave it and where that role came from (the module
holding it, how the forward uses a raw parameter, its shape, or ``model.roles``), which dims grow
with width, and what
the rules make of it at the proxy width and at a target width: init, LR, weight decay and Adam ε
(multipliers and the values the optimizer holds; the LR is the peak, before the schedule's factor). Then the forward multipliers, and the things
that silently change what µP means (warnings). Everything comes from the functions the trainer
calls (:func:`mutune.models.classify`, the parametrization's ``init``, :func:`mutune.models.param_groups`)
on models built on the meta device: nothing is allocated, and what this reports is what the
optimizer's param groups hold (a test checks it against a real optimizer).
"""

from __future__ import annotations

from typing import Any

import torch

from . import config, data, models
from .config import Spec
from .mup import hooks
from .mup.shapes import ParamInfo


def _target(spec: Spec, to: list[str]) -> config.Target | None:
    """The target: ``--to`` changes, else the spec's own ``target`` section, else none; derived as
    the transfer derives it (:func:`mutune.config.derive`), its warnings (a key that transfers only
    approximately, as its meaning says) kept for the report."""
    if to:
        return config.derive(spec, to)
    changes = config.target.own_changes(spec)
    return config.derive(spec, changes, source="target") if changes else None


def _per_width(spec: Spec, vocab: int) -> tuple[dict[str, ParamInfo], dict[str, dict], torch.nn.Module]:
    """Classification, each parameter's treatment (the optimizer's group values) and the meta model."""
    hp, m, rules = spec.hparams, spec.model, models.parametrization(spec)
    infos = models.classify(spec, hp, vocab)
    with torch.device("meta"):
        model = models.build(spec, hp, vocab)
    groups = models.param_groups(spec, model, infos, hp)
    rows = {}
    for g in groups:
        for name in g["names"]:
            info = infos[name]
            init, std = rules.init(info, hp.init_std, m.base_width)
            if info.role == "readout" and m.zero_init_readout:
                init, std = "zeros", 0.0
            _, wd_mult, eps_mult = rules.scaling(info, g["kind"], m.depth_alpha)
            rows[name] = {
                "shape": list(info.shape),
                "init": init,
                "init_std": std,
                "optimizer_kind": g["kind"],
                "lr_mult": g["lr_mult"],
                "lr": g["lr"],
                "wd_mult": wd_mult,
                "weight_decay": g["weight_decay"],
                "eps_mult": eps_mult if "eps" in g else None,
                "eps": g.get("eps"),
            }
    return infos, rows, model


def _forward_multipliers(spec: Spec, model: torch.nn.Module) -> dict[str, Any]:
    mult = models.forward_multipliers(spec)
    out: dict[str, Any] = {
        "input": mult.input,
        "output": mult.output,
        "attention": mult.attn,
        "residual": mult.residual,
    }
    if models.router_names(spec):  # a mixture's gates: their logits × this
        out["router"] = mult.router
    if hasattr(model, "_mutune_readouts"):  # a factory model: where mutune's hooks sit
        out["input_modules"] = list(model._mutune_inputs)
        out["readout_modules"] = list(model._mutune_readouts)
        out["attention"] = "the model's own (mutune does not change a factory model's attention)"
    return out


def _warnings(spec: Spec, infos: dict[str, ParamInfo], model: torch.nn.Module) -> list[str]:
    """The things that silently change what µP means for this model."""
    m, t, rules = spec.model, spec.train, models.parametrization(spec)
    out = []
    if rules.coord_check == "control":
        out.append(f"parametrization {rules.name}: {rules.doc}")
    for name, info in infos.items():
        if info.tied_readout:
            readers = [
                o for o in info.owners if o not in model.get_submodule("").__dict__.get("_mutune_inputs", ())
            ]
            out.append(
                f"'{name}' is tied: an embedding (constant init σ, the embedding's LR) and, through "
                f"{', '.join(repr(o) for o in readers if o) or 'a Linear'}, the readout (α_out/m on its input)"
            )
        if rules.init(info, spec.hparams.init_std, m.base_width)[0] == "keep":
            out.append(
                f"'{name}' keeps the model's own init (a 1-D parameter that is neither a bias nor a norm)"
            )
    readouts = [n for n, i in infos.items() if i.role == "readout"]
    if len(readouts) > 1:
        out.append(f"several readouts (each gets α_out/m): {', '.join(readouts)}")
    if m.family == "factory":
        _, unreached = hooks.input_modules(model, infos)
        out += [
            f"α_in does not reach '{n}' (a raw parameter of the model itself): it scales the other inputs only"
            for n in unreached
        ]
        from .checks.recorder import attention_modules

        named = "alpha_attn" in spec.model.factory_kwargs or "alpha_attn" in models.factory.call_kwargs(
            spec, spec.hparams, data.vocab_size(spec.data)
        )
        for a in attention_modules(model):
            out.append(
                f"attention '{a}': its scale is the model's own{'' if named else ' (the factory takes no alpha_attn)'}; "
                "µP wants α/d_head when the head dim grows with width: `mutune coord-check` checks it"
            )
    if t.grad_clip > 0:
        out.append(
            f"train.grad_clip={t.grad_clip:g}: the global gradient norm is measured with every gradient "
            "rescaled to the base width (optim.clip_grad_norm_), so the same steps are clipped at any width"
        )
    if m.width < m.base_width:
        out.append(f"width {m.width} < base_width {m.base_width}: m < 1 (allowed, but the proxy is wider)")
    return out


def inspect(spec: Spec, to: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The per-parameter table of ``spec``'s model at its width and at the target (``--to``), the
    forward multipliers and the warnings, as plain data (what ``--format json`` prints)."""
    vocab = data.vocab_size(spec.data)
    derived = _target(spec, list(to))
    target = derived.spec if derived is not None else None
    for s in (spec, target):  # an axis its model cannot apply is refused, as transfer refuses it
        if s is not None:
            models.check_axes(s)
    infos, proxy_rows, model = _per_width(spec, vocab)
    target_rows: dict[str, dict] = {}
    if target is not None:
        _, target_rows, target_model = _per_width(target, vocab)
    params = []
    for name, info in infos.items():
        row = {
            "name": name,
            "role": info.role,
            "role_source": info.source,  # the module holding it, how the forward uses it, its shape, or the user
            "module_kind": info.module_kind,
            "width_dims": list(info.inf_dims),
            "base_shape": list(info.base_shape),
            "tied_readout": info.tied_readout,
            "owners": list(info.owners),
            "proxy": proxy_rows[name],
        }
        if target is not None:
            row["target"] = target_rows[name]
        params.append(row)
    m, t = spec.model, spec.train
    return {
        "model": {"family": m.family, "parametrization": m.parametrization, "base_width": m.base_width},
        "optimizer": t.optimizer,
        "hparams": {"lr": spec.hparams.lr, "weight_decay": spec.hparams.weight_decay, "eps": t.eps},
        "proxy": {"width": m.width, "multipliers": _forward_multipliers(spec, model)},
        "target": None
        if target is None
        else {"width": target.model.width, "multipliers": _forward_multipliers(target, target_model)},
        "parameters": params,
        "warnings": (derived.warnings if derived is not None else []) + _warnings(spec, infos, model),
    }
