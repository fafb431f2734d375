"""How the long-running commands (run, sink, dashboard) log: text or JSON lines on stderr.

- One line per state change, never one per retry: the code that logs is built that way
  (:class:`jobpulse.outage.Outage`, :class:`jobpulse.kafka.ReadHealth`, the lease); here
  only other libraries' chatter is kept below WARNING (the root logger), so a broker restart
  or a busy dashboard does not flood the log.
- ``text``: ``2026-11-25 10:00:00,000 INFO jobpulse.dataflow: …`` (as before);
  ``json`` (``--log-format json`` / ``JOBPULSE_LOG_FORMAT=json``): one object per line,
  ``{"ts", "level", "logger", "message"}`` (+ ``"exception"``), for log shippers.
- No secrets: every line goes through :meth:`Settings.scrub` (the callers mask what they
  show already; this catches another library's text quoting a URL).
- The handler writes to whatever ``sys.stderr`` is *when a line is logged*, so a live progress
  display that redirects stderr (rich) prints log lines above itself instead of through it.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Annotated, TextIO

import orjson
import typer

from jobpulse.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: ``--log-format`` of every long-running command (run, sink, dashboard).
LogFormatOption = Annotated[
    str | None,
    typer.Option(help="Log lines: text or json (env JOBPULSE_LOG_FORMAT).", show_default=False),
]
#: ``--verbose``: jobpulse's own lines at DEBUG.
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler bound to ``sys.stderr`` as it is at each line (see module doc)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # StreamHandler.__init__ assigns it; the current stderr is always used


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (RFC 3339, UTC, ms), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class Scrub(logging.Filter):
    """Masks the settings' secrets in every line (the message and its arguments, merged)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.settings.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


#: Whether :func:`setup` chose JSON lines (an end-of-run summary is then a log line too).
_JSON: list[bool] = [False]


def is_json() -> bool:
    """Whether this process logs JSON lines (``--log-format json``)."""
    return _JSON[0]


def setup(settings: Settings, *, log_format: str | None = None, verbose: bool = False) -> None:
    """Log jobpulse's lines at INFO (DEBUG with ``verbose``), other libraries' at WARNING, in
    ``log_format`` (default ``settings.log_format``) on the current stderr."""
    fmt = log_format or settings.log_format
    _JSON[0] = fmt == "json"
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(Scrub(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("jobpulse").setLevel(logging.DEBUG if verbose else logging.INFO)
