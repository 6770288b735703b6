"""The user-error type every layer raises, so the CLI can print one line and exit with code 2.

It lives alone (nothing of mutune imported) so that the torch-free layers (the spec, the registries) and the
torch layers can both raise it without importing each other.
"""

from __future__ import annotations

import ast
import re


class SpecError(ValueError):
    """A user error: bad spec, bad argument or missing file. ``key`` names what is wrong."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class SearchFailed(RuntimeError):
    """The search ran but produced nothing usable (every trial diverged or failed): exit code 1.

    Defined here, beside ``SpecError``, so that the CLI maps it to its exit code without importing
    the study machinery (Optuna) before a command needs it."""


class MutuneWarning(UserWarning):
    """Something the user should know that does not stop the run (a repaired journal, a proxy
    narrower than its base width). The CLI prints each as one ``warning:`` line."""


# Keyword arguments of the Python API that a command-line option sets. A core function names the
# argument in its errors as a Python caller passed it (``arg("run_dir")`` is "`run_dir`",
# ``arg("resume", True)`` "`resume=True`"); the command line prints the option instead
# (``--run-dir``, ``--resume``) through :func:`for_cli`, so neither reader is told the other's word.
FLAGS = {
    "run_dir": "--run-dir",
    "workers": "--workers",
    "skip_check": "--skip-check",
    "resume": "--resume",
    "force": "--force",
    "dry_run": "--dry-run",
    "no_laws": "--no-laws",
    "to": "--to",
    "nproc": "--nproc",
    "widths": "--widths",
    "depths": "--depths",
    "experts": "--experts",
    "values": "--values",
    "param": "--param",
    "seeds": "--seeds",
    "compare": "--compare",
    "allow_unchecked": "--allow-unchecked",
    "max_drift": "--max-drift",
    "multiples.steps": "--steps",
    "multiples.batch_size": "--batch-size",
    "lr_step": "--lr-step",
}
_ARG = re.compile(r"`([a-z_.]+)(?:=([^`]*))?`")


def arg(name: str, value: object = None) -> str:
    """An argument (or an argument set to ``value``) as an error message names it to a Python caller."""
    return f"`{name}`" if value is None else f"`{name}={value!r}`"


def for_cli(text: str) -> str:
    """An error's text with every argument :func:`arg` named written as its command-line option (a
    key such as ``to width`` -> ``--to width``; "`resume=True`" -> ``--resume``; "`to=['width=W']`"
    -> ``--to width=W``)."""

    def option(m: re.Match) -> str:
        flag = FLAGS.get(m.group(1))
        if flag is None:
            return m.group(0)
        if m.group(2) is None or m.group(2) == "True":
            return flag
        try:
            value = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            value = m.group(2)
        if isinstance(value, (list, tuple)):  # --to once per item; a list option comma-separated
            value = f" {flag} ".join(map(str, value)) if flag == "--to" else ",".join(map(str, value))
        return f"{flag} {value}"

    head, sep, rest = text.partition(":")
    first, space, more = head.partition(" ")
    if sep and first in FLAGS:  # the key the error names
        text = f"{FLAGS[first]}{space}{more}{sep}{rest}"
    return _ARG.sub(option, text)
