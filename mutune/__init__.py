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

import inspect as _inspect
import types as _types

from . import config, parametrize, report, search, sweep, transfer
from .checks import coord_check
from .config import SpecError, load_spec
from .events import Events


class _CallableModule(_types.ModuleType):
    """A module that is also its main function: ``mutune.search(spec)`` is ``mutune.search.search(spec)``."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


for _module in (search, transfer, report, sweep, parametrize):
    _module.__class__ = _CallableModule
    _module.__signature__ = _inspect.signature(getattr(_module, _module.__name__.rpartition(".")[2]))

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
