"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class JobpulseError(Exception):
    """A failure with a message that says what is wrong and how to fix it."""

    exit_code = 1


class ServiceUnavailable(JobpulseError):
    """Kafka or Redis cannot be reached at the configured address."""


class UsageError(JobpulseError):
    """Bad arguments or settings."""

    exit_code = 2
