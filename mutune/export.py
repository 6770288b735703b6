"""Export the transferred µP recipe to the stack the target trains on.

mutune's answer is more than best.yaml: under µP every parameter has its own LR, weight-decay and
Adam-ε multiplier and its own init std, and the forward carries multipliers (α_in on the embedding
output, α_out/m on the logits, the attention scale, each residual branch's m_L^-α). They live in a
running mutune process only; a team training the target in torchtitan, NeMo or Hugging Face needs
them written down in that framework's own syntax. The frameworks converged on regex-matched
parameter groups with per-group LR (and weight-decay) settings, which is exactly the shape of µP's
rules, so this module turns the target's plan (:func:`mutune.planning.plan`: the derived spec and
the hyperparameters after best.yaml's laws, the same numbers a ``mutune transfer`` would train
with) into:

- ``yaml``: mutune's own schema, everything (docs/recipes.md documents it);
- ``torchtitan``: a Python module with torchtitan's ``OptimizersContainer.Config`` of
  ``ParamGroupConfig`` s (torchtitan's configs are Python ``config_registry`` functions), the init and
  forward multipliers in a comment block as what the model code must apply;
- ``nemo``: NeMo Automodel's ``optimizer:`` YAML block with ``param_group_overrides`` (pattern,
  lr_mult, wd_mult), the rest in a comment block;
- ``hf``: a Hugging Face ``config.json`` for a Granite model (the architecture whose config carries
  µP's forward multipliers: ``embedding_multiplier``, ``logits_scaling``, ``attention_multiplier``,
  ``residual_multiplier``), from mutune's multipliers.

The patterns are built from the target's own parameter names (classified on the meta device:
nothing is allocated) and each parameter is matched by exactly one of them, checked here before
anything is written. What a format cannot express is refused (:class:`~mutune.errors.SpecError`,
exit 2) naming what is missing, never approximated in silence.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__, data, models
from .config import RunDir, SpecError
from .mup.optimizers import get as optimizer_entry
from .planning import Plan, plan

FORMATS = ("yaml", "torchtitan", "nemo", "hf")
SCHEMA_VERSION = 1
# torchtitan 0.3.0's OptimizersContainer builds these torch optimizers by name
TORCHTITAN_OPTIMIZERS = {"adamw": "AdamW"}
NEMO_OPTIMIZERS = {"adamw": "torch.optim.AdamW"}


@dataclass
class Group:
    """One parameter-name pattern and everything µP gives the parameters it matches."""

    pattern: str
    names: list[str]
    roles: list[str]
    kind: str  # the rule kind (adam, sgd, muon): which torch optimizer steps it
    lr_mult: float
    lr: float  # the peak LR: the target's η × lr_mult
    wd_mult: float
    weight_decay: float  # what the torch optimizer's group gets (0: not decayed)
    eps_mult: float | None  # Adam's ε multiplier (None: not an Adam parameter)
    eps: float | None
    init: str  # normal, zeros, ones, keep (the model's own init: 1-D parameters that are not norms)
    init_std: float  # of the normal draw (0 for the other kinds)
    clip_scale: (
        float  # how its gradient norm counts towards clipping (mutune measures it as at the base width)
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recipe:
    """The target's transferred recipe: what every export format renders from."""

    plan: Plan
    vocab_size: int
    groups: list[Group]
    forward: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def spec(self):  # noqa: ANN201 - the target's Spec
        return self.plan.spec

    @property
    def names(self) -> list[str]:
        return [n for g in self.groups for n in g.names]

    def to_dict(self) -> dict[str, Any]:
        """The ``yaml`` format: mutune's own schema, complete (docs/recipes.md)."""
        s, p = self.spec, self.plan
        t, m, hp = s.train, s.model, p.hparams
        opt = optimizer_entry(t.optimizer)
        optimizer = {
            "name": t.optimizer,
            "lr": hp.lr,
            "weight_decay": hp.weight_decay,
            "eps": t.eps,
            "independent_weight_decay": models.parametrization(s).independent_weight_decay,
        }
        if "beta1" in opt.hparams:
            optimizer["betas"] = [hp.beta1, hp.beta2]
        if "momentum" in opt.hparams:
            optimizer["momentum"] = hp.momentum
        return {
            "mutune_export": SCHEMA_VERSION,
            "mutune_version": __version__,
            "source": {
                "run_dir": str(p.run_dir),
                "best": str(Path(p.run_dir) / "best.yaml"),
                "spec_hash": p.provenance.get("spec_hash"),
                "trial_number": p.provenance.get("trial_number"),
                "proxy_width": p.proxy_width,
                "to": p.overrides,
            },
            "model": {
                "family": m.family,
                "parametrization": m.parametrization,
                "width": m.width,
                "base_width": m.base_width,
                "depth": m.depth,
                "base_depth": m.base_depth,
                "depth_alpha": m.depth_alpha,
                "seq_len": m.seq_len,
                "vocab_size": self.vocab_size,
                "parameters": len(self.names),
            },
            "hparams": asdict(hp),
            "transferred_hparams": asdict(p.transferred_hparams or hp),
            "laws_applied": [a.get("description", "") for a in p.adjustments],
            "optimizer": optimizer,
            "schedule": {
                "steps": t.steps,
                "batch_size": t.batch_size,
                "kind": t.schedule,
                "warmup_steps": t.warmup_steps,
                "min_lr_ratio": t.min_lr_ratio,
                "grad_clip": t.grad_clip,
                "grad_clip_norm": models.parametrization(s).clip,
            },
            "forward": self.forward,
            "param_groups": [g.to_dict() for g in self.groups],
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------
# The recipe


def recipe(
    run_dir: str | Path | RunDir | None,
    to: list[str] | tuple[str, ...] = (),
    *,
    no_laws: bool = False,
    force: bool = False,
    smoke: bool = False,
) -> Recipe:
    """The target's recipe: its plan (laws applied as ``mutune transfer`` would), every parameter's
    rule, grouped by pattern, and the forward multipliers. Built on the meta device."""
    p = plan(run_dir, to, no_laws=no_laws, force=force, smoke=smoke)
    spec, hp = p.spec, p.hparams
    vocab = data.vocab_size(spec.data)
    infos = models.classify(spec, hp, vocab)
    with torch.device("meta"):
        model = models.build(spec, hp, vocab)
    mutune_groups = models.param_groups(spec, model, infos, hp)  # the trainer's own groups
    rules = models.parametrization(spec)
    by_treatment: dict[tuple, list[str]] = defaultdict(list)
    treatment: dict[tuple, tuple[dict, str, float]] = {}
    for gi, g in enumerate(mutune_groups):
        for name in g["names"]:
            info = infos[name]
            init, std = rules.init(info, hp.init_std, spec.model.base_width)
            if info.role == "readout" and spec.model.zero_init_readout:
                init, std = "zeros", 0.0
            key = (gi, init, std)
            by_treatment[key].append(name)
            treatment[key] = (g, init, std)
    names = [n for n, _ in model.named_parameters()]
    patterns = _patterns(names, list(by_treatment.values()))
    groups = []
    for key, members in by_treatment.items():
        g, init, std = treatment[key]
        eps = g.get("eps")
        _, wd_mult, eps_mult = rules.scaling(infos[members[0]], g["kind"], spec.model.depth_alpha)
        groups.append(
            Group(
                pattern=patterns[id(members)],
                names=members,
                roles=sorted({infos[n].role for n in members}),
                kind=g["kind"],
                lr_mult=g["lr_mult"],
                lr=g["lr"],
                wd_mult=wd_mult,
                weight_decay=g["weight_decay"],
                eps_mult=None if eps is None else eps_mult,
                eps=eps,
                init=init,
                init_std=std,
                clip_scale=g["clip_scale"],
            )
        )
    check_patterns(names, [g.pattern for g in groups])
    forward = forward_of(spec, hp)
    if not any(i.role == "router" for i in infos.values()):  # no mixture's gate: no router multiplier
        forward.pop("router_mult")
        forward["applies_to"].pop("router_mult")
    return Recipe(p, vocab, groups, forward, _notes(spec))


def forward_of(spec: Any, hp: Any) -> dict[str, Any]:
    """The forward multipliers the target applies, with what each one multiplies."""
    mult = models.forward_multipliers(spec, hp)
    out: dict[str, Any] = {
        "input_mult": mult.input,
        "output_mult": mult.output,
        "attention_scale": mult.attn,
        "residual_mult": mult.residual,
        "router_mult": mult.router,
        "unit_scaled": None if mult.unit is None else asdict(mult.unit),
        "applies_to": {
            "input_mult": "the embedding output (α_in)",
            "output_mult": "the logits: α_out/m under µP (the readout's input, so a readout bias is not scaled)",
            "attention_scale": "the attention logits q·k (in place of 1/√d_head); null: the model's own",
            "residual_mult": "each residual branch's output before it is added (m_L^-α, CompleteP)",
            "router_mult": "a mixture's router logits (1/m under µP)",
        },
    }
    return out


def _notes(spec: Any) -> list[str]:
    notes = []
    if getattr(spec.model, "zero_init_query", False):
        notes.append(
            "model.zero_init_query: the query rows (the first `width` rows) of every attention's c_attn.weight "
            "start at zero"
        )
    if spec.model.family == "factory":
        notes.append(
            "model.family factory: the attention scale is the model's own (mutune applies α_in and α_out/m by "
            "hooks; the factory computes its attention)"
        )
    return notes


# ---------------------------------------------------------------------------------------------
# Patterns


# Activation checkpointing (torch's checkpoint_wrapper, as torchtitan and NeMo apply it per block)
# renames a block's parameters ``h.3._checkpoint_wrapped_module.attn...``: allowed after a block index
WRAPPED = r"(?:_checkpoint_wrapped_module\.)?"


def _regex(name: str, generalise: bool) -> str:
    """A name's regex: each block index (a purely numeric dotted part) generalised to ``\\d+`` when
    ``generalise``, and a checkpoint wrapper allowed after it."""
    parts = name.split(".")
    out = ""
    for i, part in enumerate(parts):
        if i:  # the dot before this part, and the wrapper where the part before was a block index
            out += r"\." + (WRAPPED if parts[i - 1].isdigit() else "")
        out += r"\d+" if part.isdigit() and generalise else re.escape(part)
    return out


def _template(name: str) -> str:
    return _regex(name, generalise=True)


def _patterns(names: list[str], members: list[list[str]]) -> dict[int, str]:
    """One regex per group of names: a name's block indices generalised where every name of that
    shape is in the same group (``h\\.\\d+\\.attn\\.c_proj\\.weight``), the exact name otherwise.
    Anchored at the end and at a dotted boundary at the start, so a framework's wrapper prefix
    (``torch.compile``'s ``_orig_mod.``) still matches, as does a block wrapped for activation
    checkpointing (:data:`WRAPPED`); :func:`check_patterns` proves each parameter is matched exactly
    once."""
    owner = {n: i for i, group in enumerate(members) for n in group}
    by_template: dict[str, set[int]] = defaultdict(set)
    for n in names:
        by_template[_template(n)].add(owner[n])
    out: dict[int, str] = {}
    for i, group in enumerate(members):
        alts: list[str] = []
        for n in group:
            t = _template(n)
            alt = t if by_template[t] == {i} else _regex(n, generalise=False)
            if alt not in alts:
                alts.append(alt)
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        out[id(group)] = rf"(?:^|\.){body}$"
    if _ambiguous(names, [out[id(g)] for g in members]):  # a name that is another's dotted suffix
        out = {id(g): "^(?:" + "|".join(_regex(n, generalise=False) for n in g) + ")$" for g in members}
    return out


def _ambiguous(names: list[str], patterns: list[str]) -> bool:
    compiled = [re.compile(p) for p in patterns]
    return any(sum(1 for c in compiled if c.search(n)) != 1 for n in names)


def check_patterns(names: list[str], patterns: list[str]) -> None:
    """Every parameter name is matched (``re.search``, as torchtitan and NeMo match) by exactly one
    pattern: a parameter matched by none would train with the framework's default LR (SP), one
    matched by two would depend on the patterns' order."""
    compiled = [re.compile(p) for p in patterns]
    for n in names:
        hits = [p.pattern for p in compiled if p.search(n)]
        if len(hits) != 1:
            raise RuntimeError(f"export: parameter {n!r} is matched by {len(hits)} patterns {hits}")


# ---------------------------------------------------------------------------------------------
# Formats


def render(r: Recipe, fmt: str) -> str:
    """The recipe in format ``fmt`` (one of :data:`FORMATS`); what the format cannot express is
    refused with a :class:`SpecError` naming the key."""
    if fmt not in FORMATS:
        raise SpecError("--format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "yaml":
        return _header(r, "#") + yaml.safe_dump(r.to_dict(), sort_keys=False, allow_unicode=True)
    _refuse_unit_scaled(r, fmt)
    return {"torchtitan": torchtitan, "nemo": nemo, "hf": hf}[fmt](r)


def _refuse_unit_scaled(r: Recipe, fmt: str) -> None:
    if r.forward["unit_scaled"] is not None:
        raise SpecError(
            "model.parametrization",
            f"u-µP's forward is unit-scaled op by op (unit_scaling's linear, attention, GELU, residual taus and "
            f"loss), which {fmt} cannot express as param groups and forward multipliers; export --format yaml",
        )


def _header(r: Recipe, c: str) -> str:
    p, m = r.plan, r.spec.model
    lines = [
        f"mutune {__version__} export of {p.run_dir} (trial {p.provenance.get('trial_number')}), target "
        f"{' '.join(p.overrides) or 'as the spec names it'}",
        f"{m.family} {m.parametrization}, width {m.width} (proxy {p.proxy_width}, base {m.base_width}), "
        f"depth {m.depth}, vocab {r.vocab_size}",
    ]
    for a in p.adjustments:
        lines.append(f"law applied: {a.get('description', '')}")
    return "".join(f"{c} {ln}\n" for ln in lines)


def _what_the_model_applies(r: Recipe, c: str) -> str:
    """The comment block: init and forward multipliers the model code must apply itself."""
    f, t = r.forward, r.spec.train
    lines = [
        "",
        "What the model code must apply (the optimizer config above cannot):",
        "",
        "forward multipliers:",
    ]
    lines.append(f"  embedding output x {f['input_mult']!r} (alpha_in)")
    lines.append(f"  logits x {f['output_mult']!r} (alpha_out/m; on the readout's input)")
    attn = f["attention_scale"]
    lines.append(
        "  attention logits: the model's own scale"
        if attn is None
        else f"  attention logits q.k x {attn!r} (in place of 1/sqrt(d_head))"
    )
    lines.append(f"  each residual branch x {f['residual_mult']!r}")
    lines += ["", "init (std of a normal draw, per pattern; zeros/ones/keep otherwise):"]
    for g in r.groups:
        what = f"normal std {g.init_std!r}" if g.init == "normal" else g.init
        lines.append(f"  {g.pattern}  {what}")
    clip = models.parametrization(r.spec).clip
    if t.grad_clip and clip == "base_width":
        lines += [
            "",
            f"gradient clipping: mutune clips at {t.grad_clip} the norm measured as at the base width (each group's",
            "gradient norm x its clip_scale, listed by --format yaml); a plain global-norm clip at the same",
            "threshold clips less at this width. Set the framework's max_norm accordingly or train without it.",
        ]
    lines += [
        "",
        f"schedule: {t.schedule}, {t.warmup_steps} warmup steps, final LR ratio {t.min_lr_ratio}, {t.steps} steps,",
        "scaling every group's LR by the same factor (a relative schedule keeps the per-group ratios).",
    ]
    lines += [f"note: {n}" for n in r.notes]
    return "".join(f"{c} {ln}".rstrip() + "\n" for ln in lines)


def _only(r: Recipe, fmt: str, supported: dict[str, str]) -> None:
    opt = r.spec.train.optimizer
    if opt not in supported:
        raise SpecError(
            "train.optimizer",
            f"{opt}: the {fmt} export writes {', '.join(supported)} only (its param groups are checked against "
            f"{fmt}'s own {'/'.join(supported.values())}); export --format yaml",
        )
    if models.parametrization(r.spec).independent_weight_decay:
        raise SpecError(
            "model.parametrization",
            f"{r.spec.model.parametrization}: weight decay independent of the LR, which {fmt}'s AdamW "
            "(decay lr·λ per step) cannot express; export --format yaml",
        )


def torchtitan(r: Recipe) -> str:
    """A Python module for torchtitan's config registry: ``optimizer()`` returns the
    ``OptimizersContainer.Config``; set ``config.optimizer = optimizer()`` in your config function."""
    _only(r, "torchtitan", TORCHTITAN_OPTIMIZERS)
    hp = r.plan.hparams
    name = TORCHTITAN_OPTIMIZERS[r.spec.train.optimizer]
    lines = [
        _header(r, "#").rstrip("\n"),
        "# torchtitan (0.3) config: in your config_registry function, `config.optimizer = optimizer()`.",
        "# Each pattern is matched (re.search) against the parameter names of mutune's model of this target;",
        "# every parameter by exactly one of them.",
        _what_the_model_applies(r, "#").rstrip("\n"),
        '"""The transferred µP param groups (written by `mutune export`)."""',
        "",
        "from torchtitan.components.optimizer import OptimizersContainer, ParamGroupConfig",
        "",
        "PARAM_GROUPS = [",
    ]
    for g in r.groups:
        kwargs = {
            "lr": g.lr,
            "betas": (hp.beta1, hp.beta2),
            "eps": g.eps,
            "weight_decay": g.weight_decay,
        }
        lines.append(f"    # {', '.join(g.roles)}: lr x {g.lr_mult!r}, weight decay x {g.wd_mult!r}")
        lines.append(
            f"    ParamGroupConfig(pattern={g.pattern!r}, optimizer_name={name!r}, optimizer_kwargs={kwargs!r}),"
        )
    lines += [
        "]",
        "",
        "",
        "def optimizer() -> OptimizersContainer.Config:",
        '    """The optimizer config with the µP param groups."""',
        "    return OptimizersContainer.Config(param_groups=list(PARAM_GROUPS))",
        "",
    ]
    return "\n".join(lines)


def nemo(r: Recipe) -> str:
    """NeMo Automodel's ``optimizer:`` block. Its ``param_group_overrides`` carry an LR and a weight-decay
    multiplier per pattern and nothing else, so the Adam ε must be the same for every group."""
    _only(r, "nemo", NEMO_OPTIMIZERS)
    eps = {g.eps for g in r.groups}
    if len(eps) > 1:
        shown = ", ".join(f"{e:.3g}" for e in sorted(eps))
        raise SpecError(
            "train.eps",
            f"this target's Adam ε differs per parameter group ({shown}: µP's ε/m, with CompleteP's m_L^-α inside "
            "the blocks), and NeMo's param_group_overrides carry lr_mult and wd_mult only; export --format "
            "torchtitan or yaml",
        )
    hp = r.plan.hparams
    block = {
        "optimizer": {
            "_target_": NEMO_OPTIMIZERS[r.spec.train.optimizer],
            "lr": hp.lr,
            "betas": [hp.beta1, hp.beta2],
            "eps": eps.pop(),
            "weight_decay": hp.weight_decay,
            "param_group_overrides": [
                {"pattern": g.pattern, "lr_mult": g.lr_mult, "wd_mult": g.wd_mult} for g in r.groups
            ],
        }
    }
    return (
        _header(r, "#")
        + "# NeMo Automodel recipe YAML: the optimizer block (each pattern matches its parameters with re.search,\n"
        + "# every parameter by exactly one; the scheduler multiplies each group's LR and decay by lr_mult, wd_mult).\n"
        + _what_the_model_applies(r, "#")
        + yaml.safe_dump(block, sort_keys=False, allow_unicode=True, width=1000)
    )


GRANITE = "granite"


def hf(r: Recipe) -> str:
    """A Granite ``config.json``: the target's Granite config (the factory model's own, at the target
    width) with mutune's forward multipliers folded into Granite's µP fields. Granite multiplies the
    embeddings by ``embedding_multiplier``, divides the logits by ``logits_scaling``, scales attention
    logits by ``attention_multiplier`` and residual branches by ``residual_multiplier``; mutune's
    hooks multiply the embedding output by α_in and the readout's input by α_out/m. The per-pattern
    init and param groups (which a config.json has no fields for) go under ``mutune``."""
    spec, hp = r.spec, r.plan.hparams
    if spec.model.family != "factory":
        raise SpecError(
            "model.family",
            f"{spec.model.family}: no Hugging Face architecture with µP fields computes this model (mutune's gpt "
            "has LayerNorm, learned positions and a GELU MLP; Granite, the one whose config carries µP's "
            "multipliers, has RMSNorm, RoPE and a SwiGLU MLP). Search a Granite factory model to export hf "
            "(docs/recipes.md), or export --format yaml",
        )
    with torch.device("meta"):
        model = models.family(spec).bare(spec, hp, r.vocab_size, spec.model.width)
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) != GRANITE:
        raise SpecError(
            "model.factory",
            f"{spec.model.factory} builds {type(model).__name__}, not a Hugging Face Granite model: the hf export "
            "writes Granite's config.json (embedding_multiplier, logits_scaling, attention_multiplier, "
            "residual_multiplier); export --format yaml",
        )
    if getattr(model, "lm_head", None) is None or getattr(model.lm_head, "bias", None) is not None:
        raise SpecError(
            "model.factory",
            "the Granite model's lm_head must be a bias-free Linear (logits_scaling divides its output)",
        )
    f = r.forward
    doc = cfg.to_dict()
    doc.update(
        architectures=[type(model).__name__],
        embedding_multiplier=cfg.embedding_multiplier * f["input_mult"],
        logits_scaling=cfg.logits_scaling / f["output_mult"],
        vocab_size=r.vocab_size,
    )
    if cfg.tie_word_embeddings:
        raise SpecError(
            "model.factory",
            "a Granite model with tie_word_embeddings: mutune's α_out/m on the tied readout is a logits "
            "multiplier, but a tied table is also the embedding's init; untie it (tie_word_embeddings=False)",
        )
    doc["mutune"] = {
        "export": SCHEMA_VERSION,
        "run_dir": str(r.plan.run_dir),
        "hparams": asdict(hp),
        "param_groups": [
            {k: v for k, v in g.to_dict().items() if k not in ("names", "clip_scale")} for g in r.groups
        ],
        "notes": [
            "init: each pattern's init/init_std (Granite's _init_weights uses one initializer_range)",
            "optimizer: one group per pattern with its lr and weight_decay (and eps for Adam)",
        ],
    }
    doc.pop("transformers_version", None)
    if not all(math.isfinite(v) for v in (doc["embedding_multiplier"], doc["logits_scaling"])):
        raise SpecError("hparams", "a forward multiplier is not finite")
    return json.dumps(doc, indent=2, default=str) + "\n"


def export(
    run_dir: str | Path | RunDir | None,
    to: list[str] | tuple[str, ...] = (),
    fmt: str = "yaml",
    *,
    no_laws: bool = False,
    force: bool = False,
    smoke: bool = False,
) -> str:
    """The target's recipe as text in format ``fmt`` (:func:`recipe`, then :func:`render`)."""
    if fmt not in FORMATS:
        raise SpecError("--format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return render(recipe(run_dir, to, no_laws=no_laws, force=force, smoke=smoke), fmt)


from . import _callable_module  # noqa: E402

_callable_module(__name__)  # mutune.X(...) calls X.X(...)
