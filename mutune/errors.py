"""The user-error type every layer raises, so the CLI can print one line and exit with code 2.

It lives alone (no imports) so that the torch-free layers (the spec, the registries) and the
torch layers can both raise it without importing each other.
"""

from __future__ import annotations


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
