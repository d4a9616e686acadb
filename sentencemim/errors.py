"""User-facing errors.

A `UserError` is a mistake the user can fix (a missing file, a bad option value,
a corrupt checkpoint). The CLI prints its message on one line to stderr and
exits with status 2; no traceback unless `--debug`.
"""


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


def where(path, line=None):
    """Format a location for an error message: 'path' or 'path:line'."""
    return f"{path}:{line}" if line is not None else str(path)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (the `smim` entry point raises it from either signal):
    the command stops where it is, keeping what it has already kept. `signum` says which."""

    def __init__(self, signum: int):
        import signal
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
