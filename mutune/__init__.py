"""mutune: tune hyperparameters on a narrow µP proxy, train the wide target with them unchanged.

The Python API is the CLI's, as plain functions::

    import mutune

    spec = mutune.load_spec("configs/quickstart.yaml", ["search.n_trials=4"])
    result = mutune.search(spec, transfer=False)         # writes runs/quickstart/best.yaml
    target = mutune.transfer(result.run_dir, ["width=256"])
    rep = mutune.report(result.run_dir)                  # tables, importances, tuning cost
    sw = mutune.sweep(spec, "lr", widths=[64, 128, 256, 512], compare="sp")  # does the optimum stay put?
    groups = mutune.parametrize(model, base_width=64, factory=MyModel, lr=3e-3)  # your own loop

``search``, ``transfer``, ``report``, ``sweep`` and ``parametrize`` are also the modules of those names
(``mutune.search.default_run_dir``, ``mutune.report.write_figures``); calling the module calls
its main function. ``coord_check`` is ``mutune.checks.coord_check``.
"""

__version__ = "0.1.0"

import importlib as _importlib
import inspect as _inspect
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """A module that is also its main function: ``mutune.search(spec)`` is ``mutune.search.search(spec)``."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _callable_module(name: str) -> None:
    """Called at the end of search, transfer, report, sweep and parametrize: however the module is
    imported (``import mutune.search`` or ``mutune.search``), it is callable."""
    module = _sys.modules[name]
    module.__class__ = _CallableModule
    module.__signature__ = _inspect.signature(getattr(module, name.rpartition(".")[2]))


# Imported on first use (PEP 562), so that `import mutune.rules` or `mutune --help` does not load
# torch, Optuna and every command: the µP core and the CLI each load only what they use.
_LAZY = {
    "config": ("mutune.config", None),
    "parametrize": ("mutune.parametrize", None),
    "report": ("mutune.report", None),
    "search": ("mutune.search", None),
    "sweep": ("mutune.sweep", None),
    "transfer": ("mutune.transfer", None),
    "coord_check": ("mutune.checks", "coord_check"),
    "SpecError": ("mutune.errors", "SpecError"),
    "load_spec": ("mutune.config", "load_spec"),
    "Events": ("mutune.events", "Events"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mutune' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = _importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Events",
    "SpecError",
    "config",
    "coord_check",
    "load_spec",
    "parametrize",
    "report",
    "search",
    "sweep",
    "transfer",
]
