"""Corpora, the train/val split, and batches.

Three sources, all loaded once per process (trials in a search reuse the same arrays):

- ``stdlib``: the bytes of the Python standard library's own ``.py`` files (sorted paths, no
  site-packages, no test folders). Every machine with Python has it, so the default job needs
  no download. About 12 MB on Python 3.11; byte-level, vocab 256.
- ``text``: a user's file, or every file under a folder (sorted), as bytes.
- ``tokens``: a nanoGPT-style ``uint16`` token file, memory-mapped: either one ``.bin`` (the last
  ``val_fraction`` is validation) or a folder holding ``train.bin`` and ``val.bin`` (``mutune data
  prepare`` writes one, uint32 where the vocabulary needs it, its meta.yaml saying which).

Byte corpora are split deterministically in interleaved 64 KiB chunks, so validation samples
every part of the corpus rather than only the files that sort last.
"""

from __future__ import annotations

import functools
import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataSpec, SpecError
from .config.corpus import read_meta

SPLIT_CHUNK = 64 * 1024
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
VAL_SEED = 1234  # the validation batches are the same for every run on the same corpus


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # 1-D uint8 / uint16 token ids
    val: np.ndarray
    vocab_size: int
    description: str


def vocab_size(spec: DataSpec) -> int:
    """Known without loading anything, so plans can be made for data that is not here."""
    if spec.corpus != "tokens":
        return 256
    if spec.vocab_size is None:  # a prepared folder not here: its meta.yaml would have said
        raise SpecError(
            "data.path",
            f"{spec.path} not found (the vocabulary size comes from its meta.yaml; or set data.vocab_size)",
        )
    return spec.vocab_size


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return files


def _read_all(files: list[Path]) -> np.ndarray:
    return np.frombuffer(b"".join(f.read_bytes() for f in files), dtype=np.uint8)


def split_interleaved(data: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Chunk i goes to validation when floor((i+1)·f) > floor(i·f): an even spread of fraction f.

    Chunks are 64 KiB, or smaller for small corpora so that there are at least ~200 of them.
    """
    size = max(1, min(SPLIT_CHUNK, len(data) // 200))
    n_chunks = math.ceil(len(data) / size)
    is_val = [math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction) for i in range(n_chunks)]
    chunks = [data[i * size : (i + 1) * size] for i in range(n_chunks)]
    train = np.concatenate([c for c, v in zip(chunks, is_val, strict=True) if not v] or [data[:0]])
    val = np.concatenate([c for c, v in zip(chunks, is_val, strict=True) if v] or [data[:0]])
    return train, val


def _token_file(path: Path, dtype: str = "uint16") -> np.ndarray:
    """A token file (uint16, or the dtype a prepared folder's meta.yaml names), memory-mapped; a size
    that is not whole tokens is a user error naming it."""
    size, width = path.stat().st_size, np.dtype(dtype).itemsize
    if size % width or size == 0:
        raise SpecError(
            "data.path",
            f"{path} has {size} bytes, {'none' if size == 0 else f'not a multiple of {width}'}: a tokens .bin holds "
            f"{dtype} token ids, {width} bytes each (is it a text file? use data.corpus: text)",
        )
    return np.memmap(path, dtype=dtype, mode="r")


def _tokens(path: Path, vocab: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray, str]:
    if path.is_dir():
        train_path, val_path = path / "train.bin", path / "val.bin"
        for p in (train_path, val_path):
            if not p.is_file():
                raise SpecError("data.path", f"token folder {path} has no {p.name}")
        dtype = (read_meta(path) or {}).get("dtype", "uint16")  # `mutune data prepare` records it
        train = _token_file(train_path, dtype)
        val = _token_file(val_path, dtype)
    else:
        data = _token_file(path)
        cut = int(len(data) * (1 - val_fraction))
        train, val = data[:cut], data[cut:]
    for name, arr in (("train", train), ("val", val)):
        top = max((int(arr[i : i + (1 << 24)].max()) for i in range(0, len(arr), 1 << 24)), default=0)
        if top >= vocab:
            raise SpecError(
                "data.vocab_size", f"{name} tokens in {path} go up to {top} >= vocab_size {vocab}"
            )
    return train, val, f"tokens {path}"


@functools.lru_cache(maxsize=4)
def _load(corpus: str, path: str | None, vocab: int | None, val_fraction: float) -> Corpus:
    if corpus == "stdlib":
        files = stdlib_files()
        if not files:
            raise SpecError("data.corpus", f"no .py files found under {sysconfig.get_paths()['stdlib']}")
        train, val = split_interleaved(_read_all(files), val_fraction)
        return Corpus(train, val, 256, f"stdlib ({len(files)} files)")
    p = Path(path).expanduser()
    if not p.exists():
        raise SpecError("data.path", f"file not found: {p}")
    if corpus == "text":
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        if not files:
            raise SpecError("data.path", f"no files under {p}")
        train, val = split_interleaved(_read_all(files), val_fraction)
        return Corpus(train, val, 256, f"text {p} ({len(files)} files)")
    train, val, desc = _tokens(p, vocab, val_fraction)
    return Corpus(train, val, vocab, desc)


def load(spec: DataSpec, min_len: int = 2) -> Corpus:
    """The corpus for ``spec``, cached per process. ``min_len`` is the shortest usable split (seq_len + 1)."""
    corpus = _load(spec.corpus, spec.path, spec.vocab_size, spec.val_fraction)
    for name, arr in (("train", corpus.train), ("validation", corpus.val)):
        if len(arr) < min_len:
            raise SpecError(
                "data.path" if spec.path else "data.corpus",
                f"the {name} split has {len(arr)} tokens; need at least {min_len} (model.seq_len + 1)",
            )
    return corpus


def get_batch(
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
    part: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x = data[i:i+T], y = data[i+1:i+T+1], both (B, T) int64.

    ``part=(rank, world)``: every rank draws the same global batch and keeps its slice, so the
    ranks of a distributed run together see exactly the batch a single process would.
    """
    ix = rng.integers(0, len(data) - seq_len, size=batch_size)
    rank, world = part
    ix = ix[rank * batch_size // world : (rank + 1) * batch_size // world]
    x = torch.from_numpy(np.stack([data[i : i + seq_len] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + seq_len] for i in ix]).astype(np.int64))
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
