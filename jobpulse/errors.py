"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


class JobpulseError(Exception):
    """A failure with a message that says what is wrong and how to fix it."""

    exit_code = 1


class ServiceUnavailable(JobpulseError):
    """Kafka or Redis cannot be reached at the configured address."""


class AuthenticationFailed(ServiceUnavailable):
    """Kafka or Redis answers but refuses the configured credentials (retrying will not help)."""


class UsageError(JobpulseError):
    """Bad arguments or settings."""

    exit_code = 2


def error_line(error: JobpulseError) -> str:
    """How every jobpulse command reports an error: one line, no traceback."""
    return f"jobpulse: {error}"


def exit_now(error: JobpulseError) -> NoReturn:
    """Report ``error`` and end the process at once.

    For a fatal condition met inside the dataflow's runtime, where a raised exception would
    be printed as a Rust panic with a backtrace: the run ends as after ``kill -9``, which
    the recovery store is built for (it resumes from the last snapshot, exactly).
    """
    import typer

    typer.secho(error_line(error), err=True, fg="red")
    sys.stderr.flush()
    os._exit(error.exit_code)
