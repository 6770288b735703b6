"""The spec's commands, which load no training stack: ``mutune init`` (a commented starter spec) and
``mutune show-config`` (the resolved spec)."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .. import config
from ..errors import SpecError
from .app import OverridesArg, app
from .console import log_line

# the registered model families (mutune.config.families), as the option's choices
ModelChoice = Enum("ModelChoice", {name: name for name in config.FAMILIES}, type=str)
FAMILY_HELP = ", ".join(f"{f.name} ({f.doc})" for f in config.FAMILIES.values())


@app.command()
def init(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="where to write the spec")] = Path(
        "mutune.yaml"
    ),
    model: Annotated[
        ModelChoice,
        typer.Option("--model", "-m", metavar="|".join(config.FAMILIES), help=FAMILY_HELP),
    ] = ModelChoice[next(iter(config.FAMILIES))],
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter spec: every key, its type, default and meaning.

    It validates and runs as written, from any folder: mutune search PATH --smoke. With --model
    factory, a model file goes beside it (NAME_model.py, the spec's model.factory), to replace with
    your own.

    Example: mutune init --model mlp my-mlp.yaml
    """
    from .. import docs as docs_mod

    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    model_file = path.parent / f"{name}_model.py" if model.value == "factory" else None
    for p in (path, model_file):
        if p is not None and p.exists() and not force:
            raise SpecError(str(p), "already exists; pick another path or pass --force")
    factory = f"{model_file.name}:build" if model_file is not None else None  # relative to the spec
    text = docs_mod.starter_spec(model.value, name=name, filename=str(path), factory=factory)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model_file is not None:
        model_file.write_text(docs_mod.starter_model())
    path.write_text(text)
    wrote = f"{path} and {model_file}" if model_file is not None else str(path)
    log_line(f"wrote {wrote}; next: mutune search {shlex.quote(str(path))} --smoke")


@app.command("show-config")
def show_config(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="show the --smoke variant")] = False,
) -> None:
    """Print the fully resolved spec (defaults and overrides filled in) as YAML.

    Keys that do not apply (a categorical range's bounds) are left out; the model section holds its
    family's keys.

    Example: mutune show-config configs/quickstart.yaml train.steps=50
    """
    import yaml

    spec = config.load_spec(config_path, overrides or [], smoke=smoke)
    sys.stdout.write(yaml.safe_dump(config.shown(spec), sort_keys=False, allow_unicode=True))
