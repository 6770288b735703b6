"""Non-computation changes give identical losses: the numbers pinned from the pre-redesign code.

tests/pinned/pinned.json was first written by tests/pinned/harness.py on commit e9d6408 (before the
µP core, the model/optimizer registries, the trainer and the study machinery were reorganised); the
reorganisation reproduced it bit for bit. It was regenerated once since, for a deliberate
computation change (Adam ε/m on every parameter with a width dim, with the depth-transfer work),
after checking that everything else still reproduced the old file. The same searches (AdamW µP,
tied, SGD, SP, MLP, a factory model), transfers, coord checks and a sweep must reproduce every loss
bit for bit.
"""

from __future__ import annotations

import json

import pytest

from .pinned import harness


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    import os

    old = os.getcwd()
    os.chdir(harness.ROOT)  # the factory spec imports examples.my_model from the repository root
    try:
        return harness.collect(tmp_path_factory.mktemp("pinned"))
    finally:
        os.chdir(old)


PINNED = json.loads(harness.PINNED.read_text())


@pytest.mark.parametrize("key", sorted(PINNED))
def test_losses_are_bit_identical_to_the_pinned_ones(produced, key):
    assert produced[key] == PINNED[key]  # exact equality of floats, no tolerance
