"""Non-computation changes give identical losses: the numbers pinned from the pre-redesign code.

tests/pinned/pinned.json was first written by tests/pinned/harness.py on commit e9d6408 (before the
µP core, the model/optimizer registries, the trainer and the study machinery were reorganised); the
reorganisation reproduced it bit for bit. It was regenerated twice since, each time for a deliberate
computation change after checking that everything else still reproduced the old file: Adam ε/m on
every parameter with a width dim (with the depth-transfer work); then, with the coord check that
records every layer at any depth (more coord-check rows; the old rows bit-identical) and gradient
clipping by the norm as at the base width (runs off the base width: the transfers and the sweep's
µP points at width 64; every search unchanged). The same searches (AdamW µP,
tied, SGD, SP, MLP, a factory model), transfers, coord checks and a sweep must reproduce every loss.

Bit for bit where a set of values was made on an environment like this one (CPU capability, torch,
architecture: the last bits of float32 results depend on the kernels these select), and within
``harness.RTOL`` of every recorded set everywhere. A machine with no matching set skips the
bit-for-bit test, saying which environment it is; ``python -m tests.pinned.harness --add`` records it.
Keys pinned since (the moe family's, harness.ADDED) are in the sets of the environments that recorded
them (``--extend``) and compared there.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

from mutune.mup import parametrizations as pz

from .pinned import harness

SETS = harness.load()
ENV = harness.environment()
HERE = harness.matching(SETS, ENV)
KEYS = sorted({k for s in SETS for k in s["values"]})


def _collect(tmp_path_factory, only=None):
    old = os.getcwd()
    os.chdir(harness.ROOT)  # the factory spec imports examples.my_model from the repository root
    try:
        return harness.collect(tmp_path_factory.mktemp("pinned"), only=only)
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    return _collect(tmp_path_factory)


def test_every_set_pins_the_same_keys_but_those_added_since():
    """A key only some sets pin is one pinned after the others were made (harness.ADDED: the moe
    family's), and every key is pinned somewhere."""
    for s in SETS:
        assert set(KEYS) - set(s["values"]) <= harness.ADDED, s["made_on"]
    assert set(harness.ADDED) <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_losses_are_bit_identical_to_the_pinned_ones(produced, key):
    if HERE is None:
        pytest.skip(f"no pinned set was made on {ENV}: compared within rtol {harness.RTOL} only")
    if key not in HERE["values"]:
        pytest.skip(f"{key} was pinned after this environment's set was made: compared within rtol only")
    assert produced[key] == HERE["values"][key]  # exact equality of floats, no tolerance


@pytest.mark.parametrize("key", KEYS)
def test_losses_are_within_tolerance_of_every_pinned_set(produced, key):
    for s in SETS:
        if key in s["values"]:
            assert not harness.differences(produced[key], s["values"][key], rtol=harness.RTOL), s["made_on"]


def test_the_comparison_itself():
    x = 3.159173011779785
    ulp = math.nextafter(x, math.inf)
    assert harness.differences([x, [1.0]], [x, [1.0]]) == []
    assert harness.differences([ulp], [x])  # one ulp fails the exact comparison...
    assert harness.differences([ulp], [x], rtol=harness.RTOL) == []  # ...not the tolerant one
    assert harness.differences([x * (1 + 1e-5)], [x], rtol=harness.RTOL) == []
    assert harness.differences([x * (1 + 3e-4)], [x], rtol=harness.RTOL)
    assert harness.differences([x * (1 - 3e-4)], [x], rtol=harness.RTOL)
    # structure and labels are exact under any tolerance
    assert harness.differences([x, x], [x], rtol=1.0)
    assert harness.differences([["wte", 32, 0, x]], [["wpe", 32, 0, x]], rtol=1.0)
    assert harness.differences([["h", 33, 0, x]], [["h", 32, 0, x]], rtol=1.0)
    assert harness.differences({"a": [x]}, {"b": [x]}, rtol=1.0)
    assert harness.differences([math.nan], [x], rtol=1.0)
    assert harness.differences([math.nan], [math.nan]) == []
    assert harness.differences([1], [1.0])  # an int where a float was pinned


def test_a_small_computation_change_fails_the_tolerance(tmp_path_factory, monkeypatch):
    """The logits multiplier 0.1% off (α_out/m × 1.001), one search and its transfer: the tolerant
    comparison must see it, or it would not guard the refactors on machines with no set of their own."""

    class Off(pz.Parametrization):
        def multipliers(self, *args, **kwargs):
            m = super().multipliers(*args, **kwargs)
            return dataclasses.replace(m, output=m.output * 1.001)

    mup = pz.PARAMETRIZATIONS["mup"]
    fields = {f.name: getattr(mup, f.name) for f in dataclasses.fields(mup)}
    monkeypatch.setitem(pz.PARAMETRIZATIONS, "mup", Off(**fields))
    changed = _collect(tmp_path_factory, only="quickstart")
    diff = harness.differences(changed, {k: SETS[0]["values"][k] for k in changed}, rtol=harness.RTOL)
    assert len(diff) >= 5, diff
