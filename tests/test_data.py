"""Corpora: the built-in stdlib bytes, text files and folders, nanoGPT-style token files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mutune import data
from mutune.config import DataSpec, SpecError


def test_stdlib_corpus_is_deterministic_and_excludes_tests():
    files = data.stdlib_files()
    assert files == data.stdlib_files() and len(files) > 100
    by_dir = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f.name)
    assert all(names == sorted(names) for names in by_dir.values())
    parts = {part for f in files for part in f.parts}
    assert not parts & {"site-packages", "dist-packages", "test", "tests", "idle_test"}
    assert all(f.suffix == ".py" for f in files)
    corpus = data.load(DataSpec())
    assert corpus.vocab_size == 256
    total = len(corpus.train) + len(corpus.val)
    assert total > 2_000_000  # ~12 MB on CPython 3.11
    assert len(corpus.val) / total == pytest.approx(0.1, abs=0.01)
    assert data.load(DataSpec()) is corpus  # loaded once per process


def test_interleaved_split_is_even_and_complete():
    arr = np.arange(200 * 5000, dtype=np.uint32)  # 200 chunks of 5000 (small corpora get smaller chunks)
    train, val = data.split_interleaved(arr, 0.2)
    assert len(val) == 40 * 5000 and len(train) + len(val) == len(arr)
    assert np.array_equal(np.sort(np.concatenate([train, val])), arr)  # nothing lost or duplicated
    assert val[0] == 4 * 5000 and val[5000] == 9 * 5000  # every 5th chunk, spread through


def test_text_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello world " * 20000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"xyz" * 50000)
    one = data.load(DataSpec(corpus="text", path=str(tmp_path / "a.txt")))
    both = data.load(DataSpec(corpus="text", path=str(tmp_path)))
    assert len(both.train) + len(both.val) == 240000 + 150000
    assert len(one.train) + len(one.val) == 240000


def test_missing_text_path_names_the_key(tmp_path):
    with pytest.raises(SpecError) as e:
        data.load(DataSpec(corpus="text", path=str(tmp_path / "missing.txt")))
    assert e.value.key == "data.path" and "missing.txt" in str(e.value)


def test_token_file_and_folder(tmp_path):
    toks = (np.arange(100_000) % 1000).astype(np.uint16)
    toks.tofile(tmp_path / "all.bin")
    c = data.load(DataSpec(corpus="tokens", path=str(tmp_path / "all.bin"), vocab_size=1000))
    assert len(c.val) == 10_000 and c.vocab_size == 1000
    folder = tmp_path / "split"
    folder.mkdir()
    toks[:80_000].tofile(folder / "train.bin")
    toks[80_000:].tofile(folder / "val.bin")
    c = data.load(DataSpec(corpus="tokens", path=str(folder), vocab_size=1000))
    assert len(c.train) == 80_000 and len(c.val) == 20_000
    with pytest.raises(SpecError, match="vocab_size"):
        data.load(DataSpec(corpus="tokens", path=str(tmp_path / "all.bin"), vocab_size=500))
    (folder / "val.bin").unlink()
    with pytest.raises(SpecError, match="val.bin"):
        data.load(DataSpec(corpus="tokens", path=str(folder), vocab_size=1000, val_fraction=0.2))


def test_batches_are_shifted_windows_and_seeded():
    arr = np.arange(1000, dtype=np.uint16)
    x, y = data.get_batch(arr, 4, 8, np.random.default_rng(0), torch.device("cpu"))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    x2, _ = data.get_batch(arr, 4, 8, np.random.default_rng(0), "cpu")  # a device name works too
    assert torch.equal(x, x2)


def test_too_short_corpus_is_a_user_error(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"ab" * 10)
    with pytest.raises(SpecError, match="seq_len"):
        data.load(DataSpec(corpus="text", path=str(tmp_path / "t.txt")), min_len=129)
