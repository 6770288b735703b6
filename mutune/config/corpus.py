"""A prepared token folder's record (``meta.yaml``, written by ``mutune data prepare``): the tokenizer,
its vocabulary size and the dtype of ``train.bin`` / ``val.bin``.

The spec reads the vocabulary size from it (``data.corpus: tokens`` with ``data.path`` a prepared
folder needs no ``data.vocab_size``, and one that disagrees with the tokenizer is refused), and the
corpus loader reads the dtype (uint16 below 2^16 tokens, uint32 above). Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

META_NAME = "meta.yaml"
DTYPES = {"uint16": 1 << 16, "uint32": 1 << 32}  # dtype -> the vocabulary sizes it holds (ids < this)


def token_dtype(vocab_size: int, where: str) -> str:
    """The narrowest dtype that holds every id of a vocabulary of ``vocab_size`` tokens."""
    for name, limit in DTYPES.items():
        if vocab_size <= limit:
            return name
    raise SpecError(
        where, f"a vocabulary of {vocab_size:,} tokens does not fit in uint32 token ids (at most 2^32)"
    )


def read_meta(path: str | Path | None) -> dict[str, Any] | None:
    """The folder's ``meta.yaml`` as a mapping, or None where ``path`` is not a prepared folder."""
    if not path:
        return None
    meta = Path(path).expanduser() / META_NAME
    if not meta.is_file():
        return None
    try:
        doc = yaml.safe_load(meta.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(str(meta), f"cannot be read: {e}".splitlines()[0]) from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("vocab_size"), int)
        or doc.get("dtype") not in DTYPES
    ):
        raise SpecError(str(meta), "is not a `mutune data prepare` record (no vocab_size and dtype)")
    return doc
