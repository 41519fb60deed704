"""The one exception type for mistakes a user can fix.

A ``UserError`` carries a one-paragraph message that names the file, line or option at fault and says what
to do. The CLI prints it without a traceback and exits with status 2; library callers can catch it.
"""


class UserError(Exception):
    """A user mistake (bad path, bad column, unknown preset, ...) with a message that says how to fix it."""


def require(condition: bool, message: str) -> None:
    """Raise ``UserError(message)`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's pre-emption), raised where the program is, like Ctrl-C: the training loop
    saves a step checkpoint and says how to resume. The CLI exits with 143 (128 + SIGTERM) instead of 130."""
