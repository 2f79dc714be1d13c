"""Errors a user can act on.

Each carries one message that says what is wrong and what to do; the CLI
prints it without a traceback and exits with status 2.
"""


class Erav1Error(Exception):
    """Base class: a problem the user can fix, with a message saying how."""


class UsageError(Erav1Error, ValueError):
    """An unknown option value, such as a model or optimizer name."""


class DataError(Erav1Error):
    """A dataset that is missing, malformed or unreadable."""


class CheckpointError(Erav1Error):
    """A checkpoint or weights file that is missing, corrupt or foreign."""


class RunDirError(Erav1Error):
    """A run directory that holds a run already, or none when one is needed."""


class NonFiniteLossError(Erav1Error):
    """Training diverged: the loss became NaN or infinite."""
