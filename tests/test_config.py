"""The spec: every shipped config validates; overrides, types and cross-field checks."""

from __future__ import annotations

import pytest

from mutune import config
from mutune.config import SpecError

from .conftest import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    spec = config.load_spec(path)
    assert spec.name == path.stem
    config.smoke(spec)  # and its smoke variant is valid too


def test_configs_include_quickstart_and_mlp():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert {"quickstart", "mlp"} <= names


def test_overrides_are_typed_and_dotted():
    spec = config.spec_from_dict(
        {}, ["train.steps=50", "hparams.lr=1e-3", "model.tie_embeddings=true", "search.space.lr.low=1e-5"]
    )
    assert spec.train.steps == 50
    assert spec.hparams.lr == pytest.approx(1e-3)  # YAML 1.1 reads "1e-3" as a string; we coerce
    assert spec.model.tie_embeddings is True
    # an override edits the default space instead of replacing it
    assert spec.search.space["lr"].low == pytest.approx(1e-5)
    assert spec.search.space["lr"].high == pytest.approx(0.1)
    assert set(spec.search.space) == set(config.default_space(spec.model.family, spec.model.parametrization))


def test_yaml_space_replaces_default_space():
    spec = config.spec_from_dict(
        {"search": {"space": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1}}}}
    )
    assert set(spec.search.space) == {"lr"}


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["train.stepz=3"], "train.stepz", "did you mean 'train.steps'"),
        (["train.steps=abc"], "train.steps", "expected an integer"),
        (["train.steps=1.5"], "train.steps", "expected an integer"),
        (["model.width=0"], "model.width", "> 0"),
        (["model.width=100"], "model.width", "not divisible"),
        (["model.parametrization=ntk"], "model.parametrization", "expected one of"),
        (["search.space.lr.low=0"], "search.space.lr.low", "low > 0"),
        (["search.space.lr.low=1", "search.space.lr.high=0.5"], "search.space.lr.low", "below high"),
        (["search.space.learning_rate.low=1"], "search.space.learning_rate", "not a hyperparameter"),
        (["data.corpus=text"], "data.path", "needs data.path"),
        (["data.corpus=tokens", "data.path=x.bin"], "data.vocab_size", "needs data.vocab_size"),
        (["model.head_dim=null"], "model.head_dim", "exactly one"),
        (["model.tie_embeddings=true", "model.zero_init_readout=true"], "model.zero_init_readout", "tied"),
        (["target.overrides={hparams.lr: 1}"], "target.overrides.hparams.lr", "unchanged"),
        (["model.width.x=3"], "model.width", "not a section"),
        (["train=3"], "train", "expected a mapping"),
        (["nokeyvalue"], "nokeyvalue", "KEY=VALUE"),
    ],
)
def test_bad_specs_name_the_key(overrides, key, words):
    with pytest.raises(SpecError) as e:
        config.spec_from_dict({}, overrides)
    assert e.value.key == key
    assert words in e.value.message


def test_spec_hash_tracks_content():
    a = config.spec_from_dict({})
    assert a.hash() == config.spec_from_dict({}).hash()
    assert a.hash() != config.spec_from_dict({}, ["train.steps=7"]).hash()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        config.load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        config.load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="mapping"):
        config.load_spec(listy)


def test_smoke_is_tiny_and_valid():
    spec = config.load_spec(CONFIGS / "quickstart.yaml")
    s = config.smoke(spec)
    assert s.model.width <= 32 and s.train.steps <= 12 and s.search.n_trials <= 3
    assert s.target.width == 64
    assert s.model.width % s.model.head_dim == 0
