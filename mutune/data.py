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

And one source that is not text: ``data.module: "package.module:function"``, the user's own code,
returning ``(train, val)``, each an iterable of ``(x, y)``: an input tensor and its class label,
one example at a time (``y`` a number) or one batch at a time (``y`` a 1-D tensor). mutune reads
them once into tensors (:class:`Examples`) and draws its batches from them as it draws token
windows, so a classifier (a ViT, an MLP-Mixer) trains, is searched and transferred like a language
model; its "tokens" are examples. Its output size is the number of classes (``data.vocab_size``, or
the largest label + 1).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import math
import os
import sys
import sysconfig
from collections.abc import Callable
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
class Examples:
    """A data module's examples as tensors: inputs ``x`` (N, ...) and class labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray | Examples  # 1-D uint8 / uint16 token ids, or a data module's examples
    val: np.ndarray | Examples
    vocab_size: int  # the output size: the vocabulary, or the number of classes
    description: str


def vocab_size(spec: DataSpec) -> int:
    """The output size. Known without loading anything for text and tokens, so plans can be made for
    data that is not here; a data module's classes are counted from its labels unless given."""
    if spec.module is not None:
        return spec.vocab_size or _load_module(spec.module, spec.vocab_size).vocab_size
    if spec.corpus != "tokens":
        return 256
    if spec.vocab_size is None:  # a prepared folder not here: its meta.yaml would have said
        raise SpecError(
            "data.path",
            f"{spec.path} not found (the vocabulary size comes from its meta.yaml; or set data.vocab_size)",
        )
    return spec.vocab_size


def example_input(spec: DataSpec) -> torch.Tensor:
    """One input of a data module, batched (1, ...): what a forward can be measured or watched on."""
    train = _load_module(spec.module, spec.vocab_size).train
    return train.x[:1]


def _import(path: str, key: str) -> Callable:
    """Import ``package.module:function`` (never eval'd); the current directory is importable too."""
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SpecError(
            key, f"cannot import module '{module_name}' ({e}); is it installed or in this folder?"
        ) from None
    except (Exception, SystemExit) as e:
        raise SpecError(
            key, f"importing '{module_name}' raised {type(e).__name__}: {e}".splitlines()[0]
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            hint = difflib.get_close_matches(part, dir(obj), n=1)
            raise SpecError(
                key,
                f"'{module_name}' has no attribute '{attr}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(key, f"'{path}' is not callable")
    return obj  # type: ignore[return-value]


def _examples(items: object, split: str, path: str) -> Examples:
    """A split's (x, y) pairs (examples or batches) stacked into tensors; any mistake names data.module."""
    key = "data.module"
    xs, ys = [], []
    try:
        iterator = iter(items)  # type: ignore[call-overload]
    except TypeError:
        raise SpecError(
            key, f"{path}: the {split} split is a {type(items).__name__}, not an iterable of (x, y)"
        ) from None
    try:
        for i, item in enumerate(iterator):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise SpecError(key, f"{path}: {split} item {i} is not an (x, y) pair")
            x, y = torch.as_tensor(item[0]), torch.as_tensor(item[1])
            if y.ndim == 0:
                x, y = x[None], y[None]
            if y.ndim != 1 or x.ndim < 1 or len(x) != len(y):
                raise SpecError(
                    key,
                    f"{path}: {split} item {i}: x {tuple(x.shape)} and y {tuple(y.shape)} are not one example "
                    "(y a number) or one batch (y of shape (B,), x of shape (B, ...))",
                )
            xs.append(x)
            ys.append(y)
    except SpecError:
        raise
    except (Exception, SystemExit) as e:  # the user's iterable failed: their error, named
        raise SpecError(
            key, f"{path}: reading the {split} split raised {type(e).__name__}: {e}".splitlines()[0]
        ) from e
    if not xs:
        raise SpecError(key, f"{path}: the {split} split is empty")
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise SpecError(key, f"{path}: the {split} inputs have different shapes {sorted(shapes)[:3]}")
    y = torch.cat(ys)
    if y.is_floating_point() and not torch.equal(y, y.round()) or y.is_complex() or y.dtype == torch.bool:
        raise SpecError(key, f"{path}: the {split} labels are not class indices (integers)")
    if (y < 0).any():
        raise SpecError(
            key, f"{path}: the {split} labels go down to {int(y.min())}; class indices start at 0"
        )
    x = torch.cat(xs)
    return Examples(x.float() if x.is_floating_point() else x, y.long())


@functools.lru_cache(maxsize=4)
def _load_module(path: str, classes: int | None) -> Corpus:
    fn = _import(path, "data.module")
    try:
        made = fn()
    except (Exception, SystemExit) as e:
        raise SpecError("data.module", f"{path}() raised {type(e).__name__}: {e}".splitlines()[0]) from e
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise SpecError("data.module", f"{path}() returned {type(made).__name__}; expected (train, val)")
    train, val = _examples(made[0], "train", path), _examples(made[1], "val", path)
    if train.x.shape[1:] != val.x.shape[1:]:
        raise SpecError(
            "data.module", f"{path}: train inputs {tuple(train.x.shape[1:])}, val {tuple(val.x.shape[1:])}"
        )
    top = int(max(train.y.max(), val.y.max())) + 1
    if classes is not None and top > classes:
        raise SpecError(
            "data.vocab_size", f"the labels of {path} go up to {top - 1} >= data.vocab_size {classes}"
        )
    n = classes or top
    desc = f"module {path} ({len(train)} train, {len(val)} val examples of shape {tuple(train.x.shape[1:])}, {n} classes)"
    return Corpus(train, val, n, desc)


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
    if spec.module is not None:  # examples: each split has at least one (checked when read)
        return _load_module(spec.module, spec.vocab_size)
    corpus = _load(spec.corpus, spec.path, spec.vocab_size, spec.val_fraction)
    for name, arr in (("train", corpus.train), ("validation", corpus.val)):
        if len(arr) < min_len:
            raise SpecError(
                "data.path" if spec.path else "data.corpus",
                f"the {name} split has {len(arr)} tokens; need at least {min_len} (model.seq_len + 1)",
            )
    return corpus


def get_batch(
    data: np.ndarray | Examples,
    batch_size: int,
    seq_len: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
    part: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x = data[i:i+T], y = data[i+1:i+T+1], both (B, T) int64.

    ``part=(rank, world)``: every rank draws the same global batch and keeps its slice, so the
    ranks of a distributed run together see exactly the batch a single process would. From a data
    module's :class:`Examples`: ``batch_size`` examples drawn at random, (x, y) with y (B,) labels.
    """
    if isinstance(data, Examples):
        ix = rng.integers(0, len(data), size=batch_size)
        rank, world = part
        ix = torch.from_numpy(ix[rank * batch_size // world : (rank + 1) * batch_size // world])
        return data.x[ix].to(device), data.y[ix].to(device)
    ix = rng.integers(0, len(data) - seq_len, size=batch_size)
    rank, world = part
    ix = ix[rank * batch_size // world : (rank + 1) * batch_size // world]
    x = torch.from_numpy(np.stack([data[i : i + seq_len] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + seq_len] for i in ix]).astype(np.int64))
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
