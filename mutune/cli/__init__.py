"""The ``mutune`` command line: thin Typer commands over the core functions, plus rendering.

One module per command group (``search``, ``transfer``, ``report``, ``spec``: init and show-config,
``checks``: coord-check and inspect, ``sweep``, ``laws``), each with the rendering only it uses;
``app`` holds the Typer app and the global options, ``main`` the entry point and its exit codes,
``signals`` Ctrl-C and SIGTERM with the resume hint; ``console``, ``progress`` and ``target`` the
output several commands share.

Each command imports what it runs (torch, Optuna, pandas) in its body, so that ``mutune --help``,
``show-config``, ``init`` and argument errors answer without loading the training stack (a test
checks sys.modules after each).
"""

from __future__ import annotations

from .app import app
from .console import state

# isort: off
# The commands register on import, in the order --help lists them.
from . import search, transfer, report, spec, checks, sweep, laws, export, data  # noqa: F401
# isort: on

from .main import main

__all__ = ["app", "main", "state"]
