"""Errors an operator can act on.

Every error raised on purpose by camtrace is a ``CamtraceError``: its message
names the thing that failed and what to do about it. The CLI prints the message
and exits non-zero instead of showing a stack trace.
"""


class CamtraceError(Exception):
    """Base class: a failure with a message meant for the operator."""

    exit_code = 2


class ConfigError(CamtraceError):
    """A setting is missing, misspelt or invalid."""


class SourceError(CamtraceError):
    """A video file, folder or stream cannot be opened or decoded."""


class ModelLoadError(CamtraceError):
    """Model weights or a processor cannot be loaded."""


class InputError(CamtraceError):
    """A user-supplied input (photo, filter, time) is invalid."""


class NotFoundError(CamtraceError):
    """A named thing (camera, track, job) does not exist."""


class StorageError(CamtraceError):
    """The vector index, the SQL database or the crop store failed."""


class BrokerError(CamtraceError):
    """The message broker (Redis or RabbitMQ) cannot be reached."""
