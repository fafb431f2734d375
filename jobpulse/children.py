"""Child processes that never outlive the jobpulse process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child before exec (``preexec_fn``): get ``signum`` when the parent dies, however
    it dies (``kill -9``, a broken pipe, a crash). Linux only; a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
