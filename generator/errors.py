"""User-facing errors: what went wrong, where, and how to fix it, on one line."""
from __future__ import annotations


class UserError(Exception):
    """A bad input (recipe, grid, template, data file, option). The CLI prints
    `error: <what> (fix: <fix>)` and exits with code 2, without a traceback."""

    def __init__(self, what: str, *, fix: str = ""):
        self.what = what
        self.fix = fix
        super().__init__(f"{what} (fix: {fix})" if fix else what)
