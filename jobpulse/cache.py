"""The per-user cache: downloads and derived files shared by every clone and run.

``$XDG_CACHE_HOME/jobpulse`` (default ``~/.cache/jobpulse``): the Kafka jars, the geocoder's
precomputed tables. Everything in it can be deleted; it is rebuilt when needed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/jobpulse`` (default ``~/.cache/jobpulse``)."""
    # XDG_CACHE_HOME is the OS convention for caches, not jobpulse configuration.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jobpulse"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one.

    Processes that build the same cache file at once each write a private temporary file and
    rename it into place; the last rename wins and every version is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
