"""``mutune data prepare``: text files to the token folder ``data.corpus: tokens`` reads.

The built-in corpora are bytes; real runs use a BPE tokenizer. This writes ``train.bin`` and
``val.bin`` (token ids, uint16 where the vocabulary fits, uint32 above 2^16 tokens), a copy of the
tokenizer (``tokenizer.json``) and ``meta.yaml`` (the tokenizer, its vocabulary size, the dtype, the
inputs), from a Hugging Face ``tokenizers`` file, or from a byte-level BPE of a given vocabulary
size trained on the same files first (offline, with ``tokenizers``).

- **Streaming**: files are read a chunk (a run of whole lines) at a time and each chunk's ids are
  appended to disk, so a corpus larger than memory works; BPE training reads the same chunks
  through an iterator (``tokenizers`` keeps word counts, not the text).
- **The split**: chunk i goes to validation when floor((i+1)·f) > floor(i·f) (as the byte corpora
  split), so validation samples the whole corpus; each file ends with the end-of-text token where
  the tokenizer has one.
- **Idempotent and resumable**: a folder whose meta.yaml records the same inputs (paths, sizes,
  modification times), tokenizer (its content hash) and split is left as it is. A run stopped
  part-way (Ctrl-C, a kill, a crash) leaves ``*.bin.partial`` files and ``prepare.state.json``
  (written after the ids of each batch of chunks are on disk); the same command continues from
  the last recorded chunk. Anything else (other files, another tokenizer) starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config.corpus import META_NAME, token_dtype
from .errors import SpecError
from .files import atomic_write

EOT = "<|endoftext|>"
STATE = "prepare.state.json"
TOKENIZER = "tokenizer.json"
MAX_CHUNK = 1 << 20  # bytes of text per chunk; smaller for small corpora, so there are ~200 chunks
BATCH = 8  # chunks encoded together (tokenizers encodes a batch in parallel), then recorded
BPE_KINDS = ("bpe",)

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)


@dataclass
class Prepared:
    out: Path
    vocab_size: int
    dtype: str
    train_tokens: int
    val_tokens: int
    up_to_date: bool = False  # nothing to do: the folder already holds this preparation
    resumed_from: int = 0  # the chunk a stopped run was continued from (0: from the start)
    trained_tokenizer: bool = False


def input_files(inputs: list[str | Path]) -> list[Path]:
    """The text files: each input a file, or a folder whose files are taken in sorted order."""
    if not inputs:
        raise SpecError("TEXT_FILES", "give at least one text file or folder")
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not found:
                raise SpecError("TEXT_FILES", f"no files under {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise SpecError("TEXT_FILES", f"{p} not found")
    return files


def _signature(files: list[Path]) -> list[list[Any]]:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def chunk_size(total: int) -> int:
    return max(1, min(MAX_CHUNK, total // 200))


def chunks(files: list[Path], size: int) -> Iterator[tuple[str, bool]]:
    """(text, ends a file) chunks of whole lines of about ``size`` bytes, streamed."""
    for f in files:
        parts: list[str] = []
        n = 0
        with f.open(encoding="utf-8", errors="replace", newline="") as fh:
            for line in fh:
                parts.append(line)
                n += len(line)
                if n >= size:
                    yield "".join(parts), False
                    parts, n = [], 0
        yield "".join(parts), True


def is_val(i: int, fraction: float) -> bool:
    return math.floor((i + 1) * fraction) > math.floor(i * fraction)


# ---------------------------------------------------------------------------------------------
# The tokenizer


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face ``tokenizers`` file; anything else is a user error naming it."""
    from tokenizers import Tokenizer

    file = path / TOKENIZER if path.is_dir() else path
    if not file.is_file():
        raise SpecError("--tokenizer", f"{path}: no {TOKENIZER} there")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - the library's message says what is wrong with the file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(
            "--tokenizer", f"{file} does not load as a Hugging Face tokenizers file ({first})"
        ) from None


def vocab_size_of(tok: Any) -> int:
    """The size the model's embedding needs: the largest id + 1 (a tokenizer's ids may have gaps, so
    its count of entries can be smaller)."""
    table = tok.get_vocab(with_added_tokens=True)
    return max(table.values()) + 1 if table else 0


def train_bpe(files: list[Path], vocab_size: int, dest: Path, progress: Progress | None, total: int) -> None:
    """A byte-level BPE of ``vocab_size`` tokens (the 256 bytes, the end-of-text token, merges),
    trained on the files' chunks, written to ``dest`` atomically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    done = 0

    def texts() -> Iterator[str]:
        nonlocal done
        for text, _ in chunks(files, chunk_size(total)):
            done += len(text.encode("utf-8", "replace"))
            if progress is not None:
                progress("training the tokenizer", min(done, total), total)
            yield text

    tok.train_from_iterator(texts(), trainer=trainer)
    atomic_write(dest, lambda p: tok.save(str(p)))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_tokenizer(
    tokenizer: str,
    vocab_size: int | None,
    files: list[Path],
    out: Path,
    progress: Progress | None,
    total: int,
) -> tuple[Any, str, bool]:
    """(the tokenizer, what to record as its source, whether it was trained now). The tokenizer is
    copied (or trained) into ``out/tokenizer.json``, so the folder holds what tokenized it."""
    dest = out / TOKENIZER
    if tokenizer in BPE_KINDS:
        if vocab_size is None:
            raise SpecError(
                "--vocab-size", "--tokenizer bpe trains a byte-level BPE of --vocab-size tokens: give it"
            )
        if vocab_size < 257:
            raise SpecError(
                "--vocab-size", f"{vocab_size}: a byte-level BPE has the 256 bytes and {EOT} at least"
            )
        token_dtype(vocab_size, "--vocab-size")  # over 2^32 is refused before any training
        record = out / ".tokenizer.trained.json"
        want = {"kind": "bpe", "vocab_size": vocab_size, "files": _signature(files)}
        trained = False
        if not (dest.is_file() and record.is_file() and json.loads(record.read_text()) == want):
            out.mkdir(parents=True, exist_ok=True)
            train_bpe(files, vocab_size, dest, progress, total)
            atomic_write(record, lambda p: p.write_text(json.dumps(want)))
            trained = True
        return (
            load_tokenizer(dest),
            f"bpe (byte-level, trained by mutune, --vocab-size {vocab_size})",
            trained,
        )
    if vocab_size is not None:
        raise SpecError("--vocab-size", "only with --tokenizer bpe (a tokenizer file has its own vocabulary)")
    path = Path(tokenizer).expanduser()
    if not path.exists():
        raise SpecError("--tokenizer", f"{path} not found: give a Hugging Face tokenizer.json, or bpe")
    tok = load_tokenizer(path)
    src = path / TOKENIZER if path.is_dir() else path
    out.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.resolve() != src.resolve():
        atomic_write(dest, lambda p: shutil.copyfile(src, p))
    return tok, str(src), False


# ---------------------------------------------------------------------------------------------
# Preparing


def prepare(
    inputs: list[str | Path],
    tokenizer: str,
    out: str | Path,
    *,
    vocab_size: int | None = None,
    val_fraction: float = 0.01,
    progress: Progress | None = None,
) -> Prepared:
    """Tokenize ``inputs`` into ``out`` (module doc); re-running continues or confirms it."""
    if not 0 <= val_fraction < 1:
        raise SpecError("--val-fraction", f"must be in [0, 1), got {val_fraction}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} is a file, not a folder")
    files = input_files(inputs)
    total = sum(f.stat().st_size for f in files)
    tok, source, trained = resolve_tokenizer(tokenizer, vocab_size, files, out, progress, total)
    vocab = vocab_size_of(tok)
    dtype = token_dtype(vocab, "--tokenizer")
    eot = tok.token_to_id(EOT)
    signature = {
        "files": _signature(files),
        "tokenizer_sha256": _sha(out / TOKENIZER),
        "val_fraction": val_fraction,
        "chunk_bytes": chunk_size(total),
        "eot": eot,
    }
    meta_path = out / META_NAME
    if meta_path.is_file() and not trained:
        meta = yaml.safe_load(meta_path.read_text()) or {}
        if meta.get("signature") == signature and all((out / n).is_file() for n in ("train.bin", "val.bin")):
            return Prepared(out, vocab, dtype, meta["train_tokens"], meta["val_tokens"], up_to_date=True)
    parts = {name: out / f"{name}.bin.partial" for name in ("train", "val")}
    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if state is None or state.get("signature") != signature or not all(p.is_file() for p in parts.values()):
        state = {"signature": signature, "next_chunk": 0, "bytes": {"train": 0, "val": 0}, "done": 0}
        for p in parts.values():
            p.write_bytes(b"")
    resumed_from = state["next_chunk"]
    for name, p in parts.items():  # what was written after the last record is dropped, then redone
        with p.open("r+b") as fh:
            fh.truncate(state["bytes"][name])
    meta_path.unlink(missing_ok=True)
    for name in ("train.bin", "val.bin"):
        (out / name).unlink(missing_ok=True)
    handles = {name: p.open("ab") for name, p in parts.items()}
    try:
        batch: list[tuple[int, str, bool]] = []
        done = 0
        for i, (text, last) in enumerate(chunks(files, signature["chunk_bytes"])):
            done += len(text.encode("utf-8", "replace"))
            if i < state["next_chunk"]:
                continue
            batch.append((i, text, last))
            if len(batch) == BATCH:
                _write(tok, batch, eot, dtype, val_fraction, handles, state, state_path, done)
                batch = []
                if progress is not None:
                    progress("tokenizing", min(done, total), total)
        if batch:
            _write(tok, batch, eot, dtype, val_fraction, handles, state, state_path, done)
    finally:
        for fh in handles.values():
            fh.close()
    if progress is not None:
        progress("tokenizing", total, total)
    for name, p in parts.items():
        os.replace(p, out / f"{name}.bin")
    itemsize = np.dtype(dtype).itemsize
    counts = {name: state["bytes"][name] // itemsize for name in parts}
    meta = {
        "tokenizer": source,
        "tokenizer_file": TOKENIZER,
        "vocab_size": vocab,
        "dtype": dtype,
        "eot_id": eot,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "inputs": [str(f) for f in files],
        "signature": signature,
    }
    atomic_write(meta_path, lambda p: p.write_text(yaml.safe_dump(meta, sort_keys=False)))
    state_path.unlink(missing_ok=True)
    return Prepared(
        out,
        vocab,
        dtype,
        counts["train"],
        counts["val"],
        resumed_from=resumed_from,
        trained_tokenizer=trained,
    )


def _write(
    tok: Any,
    batch: list[tuple[int, str, bool]],
    eot: int | None,
    dtype: str,
    val_fraction: float,
    handles: dict[str, Any],
    state: dict[str, Any],
    state_path: Path,
    done: int,
) -> None:
    """Encode a batch of chunks, append each one's ids to its split, make them durable, then record
    the chunk to continue from: a kill between the two re-does the batch (the next run truncates
    the files to the recorded sizes first)."""
    encoded = tok.encode_batch([text for _, text, _ in batch], add_special_tokens=False)
    for (i, _, last), enc in zip(batch, encoded, strict=True):
        ids = enc.ids + ([eot] if last and eot is not None else [])
        name = "val" if is_val(i, val_fraction) else "train"
        arr = np.asarray(ids, dtype=dtype)
        handles[name].write(arr.tobytes())
        state["bytes"][name] += arr.nbytes
    for fh in handles.values():
        fh.flush()
        os.fsync(fh.fileno())
    state["next_chunk"] = batch[-1][0] + 1
    state["done"] = done
    atomic_write(state_path, lambda p: p.write_text(json.dumps(state)))
