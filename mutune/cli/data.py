"""``mutune data prepare``: text files to the token folder a spec's ``data.corpus: tokens`` reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SpecError
from .app import app
from .console import err, live_display, log_line, out

data_app = typer.Typer(
    help="Prepare training data: tokenize text files for data.corpus: tokens.\n\n"
    "Example: mutune data prepare my.txt --tokenizer tokenizer.json --out data/tok",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command()
def prepare(
    text_files: Annotated[
        list[Path], typer.Argument(metavar="TEXT_FILES...", help="text files, or folders of them (sorted)")
    ],
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer",
            metavar="PATH|bpe",
            help="a Hugging Face tokenizer.json (or a folder holding one), or bpe: train a byte-level BPE of "
            "--vocab-size tokens on the files first (offline)",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="writes train.bin, val.bin, meta.yaml here")
    ],
    vocab_size: Annotated[
        int | None,
        typer.Option("--vocab-size", metavar="N", help="with --tokenizer bpe: its vocabulary size"),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", metavar="F", help="share of the chunks held out for validation")
    ] = 0.01,
) -> None:
    """Tokenize text files into train.bin / val.bin (uint16, or uint32 for a vocabulary over 65,536)
    and meta.yaml (the tokenizer and its vocabulary size), streaming. Re-running the same command
    continues a stopped run, or says the folder is up to date.

    Then point a spec at it: data: {corpus: tokens, path: DIR} (the vocabulary size is read from it).

    Example: mutune data prepare my.txt --tokenizer tokenizer.json --out data/tok
    """
    if vocab_size is not None and vocab_size < 1:
        raise SpecError("--vocab-size", f"must be >= 1, got {vocab_size}")
    for path in text_files:  # said before anything heavy loads
        if not path.exists():
            raise SpecError("TEXT_FILES", f"{path} not found")
    from .. import prepare as prepare_mod

    bar = _Bar()
    try:
        res = prepare_mod.prepare(
            text_files, tokenizer, output, vocab_size=vocab_size, val_fraction=val_fraction, progress=bar
        )
    except KeyboardInterrupt:
        bar.close()
        err.print(
            f"interrupted: re-run the same command to continue ({output / prepare_mod.STATE})",
            highlight=False,
        )
        raise typer.Exit(130) from None
    bar.close()
    if res.up_to_date:
        log_line(f"{output} is up to date (same files, tokenizer and split)")
    elif res.resumed_from:
        log_line(f"continued from chunk {res.resumed_from}")
    out.print(
        f"{res.train_tokens:,} train + {res.val_tokens:,} val tokens ({res.dtype}, vocabulary {res.vocab_size:,}) "
        f"-> {output}  (data: {{corpus: tokens, path: {output}}})",
        highlight=False,
    )
    raise typer.Exit(0)


class _Bar:
    """A progress bar on a terminal; a line per tenth (and per phase) in logs."""

    def __init__(self) -> None:
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.logged: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if live_display():
            if self.progress is None:
                from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

                self.progress = Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                    console=err,
                    transient=True,
                )
                self.progress.start()
            if phase not in self.tasks:
                self.tasks[phase] = self.progress.add_task(phase, total=total)
            self.progress.update(self.tasks[phase], completed=done)
            return
        tenth = 10 * done // max(total, 1)
        if self.logged.get(phase, -1) < tenth:
            self.logged[phase] = tenth
            log_line(f"{phase}: {100 * done // max(total, 1)}% of {total:,} bytes")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
