"""Loading a spec: a YAML file or plain data, overrides, validation, and its target derived.

The spec is validated once, here, and flows down as typed objects; nothing below re-reads YAML.
Every user mistake raises :class:`~mutune.errors.SpecError` naming the dotted key (or the file),
so the CLI prints one line, exit 2. A spec that names a target is checked by deriving it
(:func:`mutune.config.target.check`): a target the transfer would refuse is refused now, before
any trial runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import target
from .schema import HParams, Spec, deciding, from_dict
from .typed import apply_overrides, build, check_ranges, parse_override, read_yaml
from .variants import offline_data, smoke, tiny


def spec_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Types are checked, defaults filled, then overrides land on the filled spec (so
    ``search.space.lr.low=1e-4`` edits the default space instead of replacing it), then validation,
    and the spec's own target is derived (refused here if the transfer would refuse it)."""
    spec = from_dict(data, overrides)
    target.check(spec)
    return spec


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, smoke: bool = False) -> Spec:
    """Load, override and validate a spec file (its name defaults to the file's stem); ``smoke``: the
    file's smoke variant with ``overrides`` applied after it (:func:`smoke_with`)."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    _anchor_factory(data, Path(path).parent)
    return smoke_with(data, overrides) if smoke else spec_from_dict(data, overrides)


def _anchor_factory(data: dict[str, Any], folder: Path) -> None:
    """A ``model.factory: file.py:function`` written in a spec file is relative to that file's folder:
    made absolute here, so the spec works from any folder and the run's config.yaml (a copy elsewhere)
    still finds the file. (Given on the command line, a path is relative to where it was typed.)"""
    model = data.get("model")
    factory = model.get("factory") if isinstance(model, dict) else None
    if isinstance(factory, str) and ":" in factory:
        file, _, function = factory.rpartition(":")
        if file.endswith(".py") and not Path(file).expanduser().is_absolute():
            model["factory"] = f"{(folder / Path(file)).resolve()}:{function}"


def smoke_with(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Spec:
    """``load_spec(smoke=True)``: the smoke variant of a spec file's ``data``, then the user's
    overrides on it, so what they typed wins (a ``search.budget`` typed derives its own trial count)."""
    d = tiny(spec_from_dict(apply_overrides(data, deciding(overrides)))).to_dict()
    typed = {parse_override(o)[0] for o in overrides}
    if "search.budget" in typed and "search.n_trials" not in typed:
        d["search"]["n_trials"] = None
    return offline_data(spec_from_dict(d, overrides))


def smoke_conflict(path: str | Path, overrides: list[str] | tuple[str, ...]) -> str | None:
    """The first override whose explicit value :func:`~mutune.config.variants.smoke` would replace
    (for commands that apply smoke themselves, so cannot keep it: they refuse the combination, naming
    the key), or None."""
    if not overrides:
        return None
    kept = load_spec(path, overrides, smoke=True).to_dict()
    smoked = smoke(load_spec(path, overrides)).to_dict()
    for token in overrides:
        key = parse_override(token)[0]
        node_k, node_s = kept, smoked
        for part in key.split("."):
            node_k = node_k.get(part) if isinstance(node_k, dict) else None
            node_s = node_s.get(part) if isinstance(node_s, dict) else None
        if node_k != node_s:
            return key
    return None


def hparams_from_dict(values: dict[str, Any], key: str = "hparams") -> HParams:
    hp = build(HParams, values, key)
    check_ranges(hp, key)
    return hp
