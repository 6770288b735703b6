"""The spec's derived forms: the ``--smoke`` variant and the spec as ``show-config`` prints it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import MutuneWarning, SpecError
from .families import FAMILIES
from .schema import DEFAULT_N_TRIALS, Spec, from_dict

# The fields of a search range that its type reads; the others are left out when a spec is shown.
SPACE_FIELDS = {
    "log_uniform": ("type", "low", "high"),
    "uniform": ("type", "low", "high"),
    "int": ("type", "low", "high", "log"),
    "categorical": ("type", "choices"),
}


def shown(spec: Spec) -> dict[str, Any]:
    """The resolved spec as a person reads it: without the keys that do not apply (``choices: null``
    under a log-uniform range). It loads back as the same spec."""
    d = spec.to_dict()
    d["search"]["space"] = {
        name: {k: v for k, v in p.items() if k in SPACE_FIELDS[p["type"]]}
        for name, p in d["search"]["space"].items()
    }
    if spec.tracker.backend == "none":
        d["tracker"] = {"backend": "none"}
    return d


# ---------------------------------------------------------------------------------------------
# Derived specs


def smoke(spec: Spec) -> Spec:
    """The same pipeline on tiny shapes: a few steps, a few trials, widths of 32 and 64; on the
    built-in corpus when the spec's own data is not on this machine (see :func:`offline_data`)."""
    return offline_data(tiny(spec))


def offline_data(spec: Spec) -> Spec:
    """The spec with the built-in corpus in place of a ``text`` or ``tokens`` path that does not
    exist, where the spec says so (``data.smoke_fallback: true``); otherwise a missing path is the
    error it is without ``--smoke`` (a smoke run must not hide a broken spec).

    A smoke run proves that a spec's pipeline works, in CI or before the data is fetched; a shipped
    recipe names data the user points at (``data.path: data/gpt2-tokens``), which a clean checkout
    does not have, and says ``smoke_fallback: true``. Where the data is here, the smoke run reads it
    (and so checks it too). The swap is said in a warning, and recorded: the run's config.yaml names
    the corpus it trained on.
    """
    d = spec.data
    if d.corpus == "stdlib" or Path(d.path or "").expanduser().exists():
        return spec
    if not d.smoke_fallback:
        raise SpecError(
            "data.path",
            f"{d.path} not found (--smoke trains on the spec's own data, so a missing one is an error as "
            "without it; give the data, or set data.smoke_fallback=true to use the built-in corpus instead)",
        )
    warnings.warn(
        MutuneWarning(
            f"--smoke: data.path {d.path} not found; using the built-in corpus (data.corpus: stdlib) instead "
            "(data.smoke_fallback)"
        ),
        stacklevel=1,  # one location, so that the "default" filter says it once per process
    )
    return spec.edit({"data.corpus": "stdlib", "data.path": None, "data.vocab_size": None})


def tiny(spec: Spec) -> Spec:
    """The smoke variant's shapes, steps and trials (its data is the spec's own)."""
    d = spec.to_dict()
    m = d["model"]
    m.update(width=32, base_width=32, depth=min(m["depth"], 2), seq_len=min(m["seq_len"], 32))
    if m["base_depth"] is not None:  # depth scaling stays asked for, and is off at the smoke proxy
        m["base_depth"] = m["depth"]
    FAMILIES[m["family"]].smoke(m)
    d["train"].update(
        steps=min(d["train"]["steps"], 12),
        batch_size=min(d["train"]["batch_size"], 4),
        warmup_steps=min(d["train"]["warmup_steps"], 2),
        eval_every=6,
        eval_batches=2,
    )
    if d["search"]["budget"] is None:  # a budget derives its own (small) count from the smoke shapes
        d["search"]["n_trials"] = min(d["search"]["n_trials"] or DEFAULT_N_TRIALS, 3)
    if d["target"]["width"] is not None:
        d["target"]["width"] = 64
    d["target"]["overrides"] = {
        k: v for k, v in d["target"]["overrides"].items() if k.split(".")[0] not in ("train", "model")
    }
    out = from_dict(d)
    return out
