"""The spec layer: the typed schema with each key's meaning across a transfer, YAML and overrides,
validation naming the key, the one target derivation, and the typed, torch-free run directory.

Modules, in the order they build on each other (imports point one way, none of them imports
torch or Optuna):

- :mod:`.typed`: plain YAML data into typed dataclasses; overrides; YAML files.
- :mod:`.meaning`: what each key means across a transfer and what it changes in a run; the key
  lists derived from that.
- :mod:`.families`: the model section, each registered family with its own keys.
- :mod:`.axes`: which scaling axes apply to a spec, and their multipliers.
- :mod:`.validate`: every cross-field check of one spec.
- :mod:`.schema`: the sections (data, train, hparams, search, target, tracker) and :class:`Spec`.
- :mod:`.variants`: the ``--smoke`` variant, the spec as ``show-config`` prints it.
- :mod:`.target`: the target derivation (``--to``, the spec's ``target:``).
- :mod:`.load`: loading a spec file or plain data, its target checked.
- :mod:`.rundir`: :class:`RunDir` and :class:`Best`, the run directory read back as typed objects.

The names most code needs are re-exported here: ``from mutune.config import Spec, load_spec``.
"""

from ..errors import SpecError
from .families import FAMILIES, FAMILY_NAMES, PARAMETRIZATION_NAMES, ModelSpec
from .load import hparams_from_dict, load_spec, smoke_conflict, smoke_with, spec_from_dict
from .rundir import PROVENANCE_TAGS, Best, RunDir
from .schema import (
    DEFAULT_N_TRIALS,
    DEFAULT_SPACE,
    HPARAM_NAMES,
    DataSpec,
    HParams,
    LawsSpec,
    ParamSpace,
    SearchSpec,
    Spec,
    TargetSpec,
    TrackerSpec,
    TrainSpec,
    default_space,
    hparams_used,
)
from .target import Target, derive
from .typed import build, parse_override, read_yaml
from .validate import validate
from .variants import offline_data, shown, smoke

__all__ = [
    "DEFAULT_N_TRIALS",
    "DEFAULT_SPACE",
    "FAMILIES",
    "FAMILY_NAMES",
    "HPARAM_NAMES",
    "PARAMETRIZATION_NAMES",
    "PROVENANCE_TAGS",
    "Best",
    "DataSpec",
    "HParams",
    "LawsSpec",
    "ModelSpec",
    "ParamSpace",
    "RunDir",
    "SearchSpec",
    "Spec",
    "SpecError",
    "Target",
    "TargetSpec",
    "TrackerSpec",
    "TrainSpec",
    "build",
    "default_space",
    "derive",
    "hparams_from_dict",
    "hparams_used",
    "load_spec",
    "offline_data",
    "parse_override",
    "read_yaml",
    "shown",
    "smoke",
    "smoke_conflict",
    "smoke_with",
    "spec_from_dict",
    "validate",
]
