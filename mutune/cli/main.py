"""The console entry point: run the app, map every known failure to its exit code and one line.

Exit codes everywhere: 0 success; 1 a check failed or a run diverged; 2 a user error (bad
spec, bad argument, missing file), printed as one line naming the key or file; 130 interrupted.
Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import inspect
import sys
import warnings

import typer

from .. import files
from ..errors import MutuneWarning, SearchFailed, SpecError, for_cli
from .app import GLOBAL_FLAGS, HELP_NAMES, app
from .console import err, out, state
from .signals import stop_once

_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map known errors to exit codes and one-line messages."""
    command = typer.main.get_command(app)
    _plain_flags(command)
    args = list(sys.argv[1:] if argv is None else argv)
    # global flags work anywhere on the line (`mutune search cfg.yaml --debug`), not only first
    flags = [a for a in args if a in GLOBAL_FLAGS]
    args = flags + [a for a in args if a not in GLOBAL_FLAGS]
    state.debug = "--debug" in flags
    state.argv = list(sys.argv[1:] if argv is None else argv)
    with stop_once(restore=argv is not None), warnings.catch_warnings():
        warnings.simplefilter("default", MutuneWarning)
        warnings.showwarning = _show_warning
        return _run(command, args)


def _run(command, args: list[str]) -> int:
    """The command, with every known failure mapped to its exit code and one line (see the module doc)."""
    try:
        rv = command.main(args=args, prog_name="mutune", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SpecError as e:
        if state.debug:
            raise
        _error_line(for_cli(str(e)))  # the options, where the core names its arguments
        return 2
    except SearchFailed as e:
        _error_line(for_cli(str(e)))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if type(e).__name__ == "Abort":  # click's name for a Ctrl-C outside a command's own handler
            return 130
        if _is_click_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":
                out.print(e.format_message(), markup=False, highlight=False)
                return 0
            # typer's validation says "Value error, 'xml' is not one of ...": the reason alone reads better
            _error_line(e.format_message().replace("Value error, ", ""))
            return e.exit_code
        if state.debug:
            raise
        cause = files.os_error(e)  # a full disk, a read-only folder: the path and the cause, exit 2
        if cause is not None:
            _error_line(files.os_error_line(cause))
            return 2
        _error_line(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        return 1


def _is_click_error(e: BaseException) -> bool:
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and hasattr(e, "show")


def _error_line(text: str) -> None:
    err.print(f"error: {text}", highlight=False, markup=False, soft_wrap=True)


def _plain_flags(command) -> None:
    """The help as people write it: flags as flags (no ``<bool>`` type column for ``--smoke``,
    ``--help`` and the like); a required argument as ``CONFIG``, not typer's ``{CONFIG}``; and each
    paragraph of a docstring one paragraph, wrapped to the terminal, not broken where the source
    line ended."""
    ctx = typer.Context(command, help_option_names=HELP_NAMES)  # the app's, which subcommands inherit
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        if hasattr(param, "_usage_display_name") and getattr(param, "required", False):
            param._usage_display_name = lambda p=param: p.display_name_raw + ("..." if p.nargs != 1 else "")
    if command.help:
        command.help = _paragraphs(command.help)
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


def _paragraphs(text: str) -> str:
    """A docstring with its paragraphs' line breaks joined (blank lines still separate paragraphs)."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """mutune's own warnings (a repaired journal, a proxy narrower than its base) as one line each."""
    if issubclass(category, MutuneWarning):
        err.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)
