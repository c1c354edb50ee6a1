"""Errors a stage raises to stop with one clear line (the CLI turns them into exit codes)."""


class StageError(RuntimeError):
    """A stage could not finish; the message names the file or key and the problem."""

    exit_code = 1
    """What ``trailers`` exits with."""
