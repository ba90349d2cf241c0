"""Errors an operator can act on.

Every error raised on purpose by camtrace is a ``CamtraceError``: its message
names the thing that failed and what to do about it. The CLI prints the message
and exits non-zero instead of showing a stack trace.

A message may name server-side things (a file path, a database URL, an SQL
statement) that the command line may show but an HTTP client must not see:
such an error also carries ``public``, the same failure told in the user's
terms, which is what the HTTP API answers (the full message goes to the
server log).
"""


class CamtraceError(Exception):
    """Base class: a failure with a message meant for the operator."""

    exit_code = 2

    def __init__(self, message: str = "", *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public

    @property
    def public_message(self) -> str:
        """What a remote client is told: ``public`` when given, else the message itself."""
        return self.public if self.public is not None else str(self)


class ConfigError(CamtraceError):
    """A setting is missing, misspelt or invalid."""


class SourceError(CamtraceError):
    """A video file, folder or stream cannot be opened or decoded."""


class ModelLoadError(CamtraceError):
    """Model weights or a processor cannot be loaded."""


class InputError(CamtraceError):
    """A user-supplied input (photo, filter, time) is invalid."""


class TooLargeError(InputError):
    """An input over a size limit: a request body, an upload's bytes or a photo's pixel count."""


class NotFoundError(CamtraceError):
    """A named thing (camera, track, job) does not exist."""


class StorageError(CamtraceError):
    """The vector index, the SQL database or the crop store failed."""


class BrokerError(CamtraceError):
    """The message broker (Redis or RabbitMQ) cannot be reached."""


class TooManyAttemptsError(CamtraceError):
    """Too many failed logins, or too many logins being checked at once (HTTP 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
