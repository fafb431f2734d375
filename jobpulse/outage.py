"""Waiting out an outage of Redis, Kafka or PostgreSQL at a sink, instead of stopping.

Shared by the dataflow's sinks and the PostgreSQL offers sink.

A sink that cannot write retries with exponential backoff (0.1 s doubling to 5 s) for up to
``JOBPULSE_OUTAGE_LIMIT_SECONDS``; it logs one line when the outage starts and one when it
ends — never one per retry — and past the limit ends the run with one line
(:func:`jobpulse.errors.exit_now`: an exception raised in a sink would print as a Rust panic;
the next start resumes from the last snapshot, exactly as after a crash). While a sink waits,
its worker does not take new input (backpressure), so nothing is lost or read ahead.

Each outage is also counted in :mod:`jobpulse.metrics` (``jobpulse_outages_total``, the
seconds waited, ``jobpulse_outage_active``), labelled by the service's kind (``redis``,
``kafka``, ``postgresql``).
"""

from __future__ import annotations

import logging
import time

from jobpulse.errors import ServiceUnavailable, exit_now

log = logging.getLogger("jobpulse.dataflow")

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


class Outage:
    """The current outage of one service as one sink sees it (``None`` started: no outage)."""

    def __init__(
        self,
        service: str,
        limit_s: float,
        *,
        who: str = "the dataflow",
        logger: logging.Logger | None = None,
    ) -> None:
        self.service = service
        self.limit_s = limit_s
        #: What stops past the limit (``the dataflow``, ``the PostgreSQL sink``), and its log.
        self.who = who
        self.log = logger or log
        self.started: float | None = None
        self._delay = FIRST_DELAY_S
        #: The metrics' label: the service's first word (``Redis at host:port`` → ``redis``).
        self.label = service.split()[0].lower() if service.split() else "unknown"

    def failed(self, error: BaseException) -> float:
        """Note a failed attempt; return how long to wait before the next one.

        Ends the process with one line once the outage has lasted longer than the limit.
        """
        from jobpulse import metrics  # (prometheus_client loads only where a sink runs)

        now = time.monotonic()
        if self.started is None:
            self.started = now
            self._delay = FIRST_DELAY_S
            metrics.OUTAGES.labels(self.label).inc()
            metrics.OUTAGE_ACTIVE.labels(self.label).set(1)
            self.log.warning(
                "%s unreachable (%s): waiting up to %.0f s, retrying with backoff",
                self.service,
                _one_line(error),
                self.limit_s,
            )
        elif now - self.started > self.limit_s:
            exit_now(
                ServiceUnavailable(
                    f"{self.who} stopped: {self.service} unreachable for more than "
                    f"{self.limit_s:.0f} s (JOBPULSE_OUTAGE_LIMIT_SECONDS): {_one_line(error)}"
                )
            )
        delay, self._delay = self._delay, min(self._delay * 2, MAX_DELAY_S)
        metrics.OUTAGE_WAIT_SECONDS.labels(self.label).inc(delay)
        return delay

    def succeeded(self) -> None:
        """Note a successful attempt: ends the outage (logged) if there was one."""
        if self.started is not None:
            from jobpulse import metrics

            metrics.OUTAGE_ACTIVE.labels(self.label).set(0)
            self.log.warning(
                "%s reachable again after %.1f s", self.service, time.monotonic() - self.started
            )
            self.started = None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
