"""``mutune data prepare`` and ``data.corpus: tokens`` on its folder: a byte-level BPE trained offline,
or a tokenizer file; uint16 or uint32 ids; streaming, idempotent, resumable; the vocabulary size
read from the tokenizer and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mutune import config, data, prepare
from mutune.config import SpecError
from mutune.config.corpus import token_dtype

from .conftest import CONFIGS

tokenizers = pytest.importorskip(
    "tokenizers", reason="tokenizers is not installed (it comes with transformers: .[hf])"
)

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "µP",
    "keeps",
    "every",
    "width",
    "in",
    "tune",
]


def corpus(folder, files: int = 3, lines: int = 300):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(files):
        text = "".join(" ".join(rng.choice(WORDS, size=8)) + f" {k}.{i}\n" for i in range(lines))
        (folder / f"doc{k}.txt").write_text(text, encoding="utf-8")
    return folder


def ids(path, dtype="uint16"):
    return np.fromfile(path, dtype=dtype)


def word_tokenizer(path, vocab: int):
    """A real tokenizers WordLevel tokenizer with ``vocab`` entries (the corpus's words among them)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    table = {w: i for i, w in enumerate(["[UNK]", *WORDS])}
    for i in range(len(table), vocab - 1):
        table[f"w{i}"] = i
    table["zzz_last"] = vocab - 1
    tok = Tokenizer(models.WordLevel(table, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def test_a_trained_byte_level_bpe_round_trips_the_text(tmp_path):
    src = corpus(tmp_path / "corpus")
    res = prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=300, val_fraction=0.0)
    assert res.trained_tokenizer and res.dtype == "uint16" and res.val_tokens == 0
    meta = yaml.safe_load((tmp_path / "out/meta.yaml").read_text())
    assert meta["vocab_size"] == 300 == res.vocab_size and meta["dtype"] == "uint16"
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "out/tokenizer.json"))
    train = ids(tmp_path / "out/train.bin")
    assert len(train) == res.train_tokens and train.max() < 300
    eot = tok.token_to_id(prepare.EOT)
    assert (train == eot).sum() == 3  # one end-of-text after each file
    docs = [tok.decode(part.tolist()) for part in np.split(train, np.flatnonzero(train == eot) + 1)[:3]]
    want = [(src / f"doc{k}.txt").read_text(encoding="utf-8") for k in range(3)]
    assert [d.replace(prepare.EOT, "") for d in docs] == want  # lossless, in order, µ included
    assert len(train) < 0.6 * sum(len(w.encode()) for w in want)  # merges learned: fewer tokens than bytes


def test_prepare_is_idempotent_and_the_split_interleaves(tmp_path):
    src = corpus(tmp_path / "corpus")
    first = prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=300, val_fraction=0.1)
    stamp = {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in ("train.bin", "val.bin", "tokenizer.json")}
    again = prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=300, val_fraction=0.1)
    assert again.up_to_date and (again.train_tokens, again.val_tokens) == (
        first.train_tokens,
        first.val_tokens,
    )
    assert stamp == {n: (tmp_path / "out" / n).stat().st_mtime_ns for n in stamp}
    assert 0.05 < first.val_tokens / (first.train_tokens + first.val_tokens) < 0.15
    (src / "doc1.txt").write_text("changed\n")  # another input: prepared again
    assert not prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=300, val_fraction=0.1).up_to_date


def test_a_stopped_run_continues_to_the_same_bytes(tmp_path):
    src = corpus(tmp_path / "corpus", files=4, lines=800)
    whole = prepare.prepare([src], "bpe", tmp_path / "whole", vocab_size=320)
    calls = []

    def stop(phase, done, total):
        calls.append(phase)
        if calls.count("tokenizing") == 5:
            raise KeyboardInterrupt  # as a Ctrl-C arrives: between two recorded batches

    with pytest.raises(KeyboardInterrupt):
        prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=320, progress=stop)
    state = json.loads((tmp_path / "out" / prepare.STATE).read_text())
    assert state["next_chunk"] == 5 * prepare.BATCH and not (tmp_path / "out/train.bin").exists()
    with open(tmp_path / "out/train.bin.partial", "ab") as f:  # a kill can leave ids written after the record
        f.write(b"\x07\x00" * 11)
    res = prepare.prepare([src], "bpe", tmp_path / "out", vocab_size=320)
    assert res.resumed_from == 5 * prepare.BATCH
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert (res.train_tokens, res.val_tokens) == (whole.train_tokens, whole.val_tokens)
    assert not (tmp_path / "out" / prepare.STATE).exists()


def test_chunks_stream_whole_lines_of_bounded_size(tmp_path):
    src = corpus(tmp_path / "corpus", files=1, lines=5000)
    size = 4096
    parts = list(prepare.chunks([src / "doc0.txt"], size))
    assert len(parts) > 20 and all(len(t) < size + 200 for t, _ in parts)  # never the whole file at once
    assert all(t.endswith("\n") for t, _ in parts) and [last for _, last in parts].count(True) == 1
    assert "".join(t for t, _ in parts) == (src / "doc0.txt").read_text()


def test_a_vocabulary_over_65536_writes_uint32_and_loads(tmp_path):
    tok = word_tokenizer(tmp_path / "words.json", 70_000)
    (tmp_path / "t.txt").write_text(("the lazy dog zzz_last " * 50 + "\n") * 40)
    res = prepare.prepare([tmp_path / "t.txt"], str(tok), tmp_path / "out", val_fraction=0.1)
    assert res.dtype == "uint32" and res.vocab_size == 70_000
    train = ids(tmp_path / "out/train.bin", "uint32")
    assert train.max() == 69_999 and (tmp_path / "out/train.bin").stat().st_size == 4 * res.train_tokens
    spec = config.spec_from_dict({"data": {"corpus": "tokens", "path": str(tmp_path / "out")}})
    assert spec.data.vocab_size == 70_000  # read from the tokenizer's record
    c = data.load(spec.data)
    assert c.vocab_size == 70_000 and c.train.dtype == np.uint32 and int(c.train.max()) == 69_999


def test_a_tokenizer_mismatch_is_caught(tmp_path):
    src = corpus(tmp_path / "corpus")
    a = word_tokenizer(tmp_path / "a.json", 500)
    prepare.prepare([src], str(a), tmp_path / "out")
    b = tmp_path / "b"
    prepare.prepare([src], "bpe", b, vocab_size=400)
    # the same folder, another tokenizer: tokenized again with it, nothing of the first left
    prepare.prepare([src], str(b / "tokenizer.json"), tmp_path / "out")
    assert (tmp_path / "out/train.bin").read_bytes() == (b / "train.bin").read_bytes()
    assert yaml.safe_load((tmp_path / "out/meta.yaml").read_text())["vocab_size"] == 400
    # a spec whose vocabulary is smaller than the tokenizer's is refused, naming the key
    with pytest.raises(SpecError) as e:
        config.spec_from_dict({"data": {"corpus": "tokens", "path": str(b), "vocab_size": 256}})
    assert e.value.key == "data.vocab_size" and "400" in e.value.message


def test_token_dtype_by_vocabulary_size():
    assert token_dtype(65_536, "k") == "uint16" and token_dtype(65_537, "k") == "uint32"
    assert token_dtype(2**32, "k") == "uint32"
    with pytest.raises(SpecError) as e:
        token_dtype(2**32 + 1, "--tokenizer")
    assert e.value.key == "--tokenizer"


@pytest.mark.parametrize(
    "args, key",
    [
        (["--tokenizer", "bpe", "--vocab-size", str(2**32 + 5)], "error: --vocab-size:"),
        (["--tokenizer", "bpe"], "error: --vocab-size:"),
        (["--tokenizer", "broken.json"], "error: --tokenizer:"),
        (["--tokenizer", "missing.json"], "error: --tokenizer:"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(run_cli, workdir, args, key):
    corpus(workdir / "corpus", files=1, lines=10)
    (workdir / "broken.json").write_text('{"version": "1.0", "model": {"type": "nothing"}}')
    r = run_cli("data", "prepare", "corpus", *args, "--out", "out")
    assert r.code == 2 and r.err.startswith(key) and len(r.err.strip().splitlines()) == 1, r
    if "broken" in args[1]:
        assert "broken.json" in r.err
    r = run_cli("data", "prepare", "nope", "--tokenizer", "bpe", "--vocab-size", "300", "--out", "out")
    assert r.code == 2 and r.err.startswith("error: TEXT_FILES:") and "nope" in r.err, r


def test_configs_bpe_smoke_runs_on_a_prepared_sample(run_cli, workdir):
    """configs/bpe.yaml's own data path, prepared here from a sample; `search --smoke` trains on it and
    the run records the vocabulary size the tokenizer has."""
    corpus(workdir / "sample", files=2, lines=400)
    r = run_cli("data", "prepare", "sample", "--tokenizer", "bpe", "--vocab-size", "384", "--out", "data/bpe")
    assert r.code == 0 and "data/bpe" in r.out, r
    progress = [ln for ln in r.err.splitlines() if ln.startswith(("training the tokenizer:", "tokenizing:"))]
    assert progress[-1].startswith("tokenizing: 100% of") and len(progress) >= 10  # the bar, as log lines
    r = run_cli("data", "prepare", "sample", "--tokenizer", "bpe", "--vocab-size", "384", "--out", "data/bpe")
    assert r.code == 0 and "up to date" in r.err, r
    r = run_cli("search", CONFIGS / "bpe.yaml", "--smoke", "--no-transfer", "search.n_trials=2")
    assert r.code == 0, r
    run = yaml.safe_load((workdir / "runs/bpe-smoke/config.yaml").read_text())
    assert {k: v for k, v in run["data"].items() if v not in (None, False)} == {
        "corpus": "tokens",
        "path": "data/bpe",
        "vocab_size": 384,
        "val_fraction": 0.1,
        "smoke_fallback": True,  # (the recipe's: the built-in corpus where data/bpe is absent)
    }  # (and the keys of other corpora, such as data.module, at null)
