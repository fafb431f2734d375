"""Progress of long work (``run``, ``sink``) on stderr: records done, rate, lag, ETA.

- On a terminal: one live line drawn by rich (a bar when the amount of work is known),
  redrawn at most :data:`TERMINAL_REFRESH_S`; log lines appear above it (the log handler
  writes to the current ``sys.stderr``, which rich redirects while it draws).
- Otherwise: a plain line every ``JOBPULSE_PROGRESS_SECONDS`` while something changes (a
  quiet, caught-up run prints nothing), e.g.
  ``run: 120,000 records, 41,250 records/s, lag 80,000, ETA 2s``. It is a log line (logger
  ``jobpulse.progress``, INFO), so it is timestamped, and one JSON object with
  ``--log-format json`` like every other line a log shipper reads.

The caller measures; this module only shows. A sample is cheap to take and taken from a
thread (:class:`ProgressThread`) or from the caller's own loop (:meth:`ProgressDisplay.show`
is rate-limited), never per record. The rate is over the last :data:`RATE_WINDOW_S`, so it
follows the current speed, and the ETA is the lag at that rate.

Forks: a process that forks while a display is live (the local cluster's launcher) gives its
children a copy of the display and of the stderr rich redirected. A fork handler keeps every
display idle across the fork, and in the child drops them and restores the real stderr, so a
child's log lines never redraw a stale copy of the parent's line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichBar

log = logging.getLogger("jobpulse.progress")

#: Seconds between two redraws on a terminal.
TERMINAL_REFRESH_S = 0.25
#: The rate is measured over this many seconds of samples.
RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class Sample:
    """How far the work is: ``done`` since the command started, ``lag`` still to do (None:
    unknown, e.g. Kafka did not answer), and ``detail``, extra text for the line."""

    done: int
    lag: int | None = None
    detail: str = ""


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_text(lag: int | None, rate: float) -> str:
    """``caught up``, ``ETA 12s``, or ``ETA –`` (nothing moves) / ``ETA ?`` (lag unknown)."""
    if lag is None:
        return "ETA ?"
    if lag == 0:
        return "caught up"
    return f"ETA {format_duration(lag / rate)}" if rate > 0 else "ETA –"


def progress_line(label: str, sample: Sample, rate: float, unit: str = "records") -> str:
    """``run: 120,000 records, 41,250 records/s, lag 80,000, ETA 2s``."""
    lag = "unknown" if sample.lag is None else f"{sample.lag:,}"
    done = f"{sample.done:,} {unit}{f' ({sample.detail})' if sample.detail else ''}"
    return f"{label}: {done}, {rate:,.0f} {unit}/s, lag {lag}, {eta_text(sample.lag, rate)}"


class _Rate:
    """Records per second over the last :data:`RATE_WINDOW_S` of samples."""

    def __init__(self) -> None:
        self._points: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        points = self._points
        points.append((now, done))
        while len(points) > 2 and now - points[1][0] >= RATE_WINDOW_S:
            points.popleft()
        first_time, first_done = points[0]
        return (done - first_done) / (now - first_time) if now > first_time else 0.0


class ProgressDisplay:
    """Shows :class:`Sample` s: rich on ``stream`` (default stderr) when it is a terminal,
    otherwise log lines every ``interval_s`` (see the module doc). Thread-safe."""

    def __init__(
        self,
        label: str,
        *,
        interval_s: float,
        unit: str = "records",
        stream: TextIO | None = None,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.interval_s = TERMINAL_REFRESH_S if self.terminal else interval_s
        self.clock = clock
        self._rate = _Rate()
        self._lock = threading.Lock()
        self._last_shown = float("-inf")
        self._last: tuple[int, int | None] | None = None
        self._bar: RichBar | None = None
        self._task: Any = None
        #: Set in a forked child: this copy belongs to the parent and shows nothing.
        self._forked = False
        _DISPLAYS.add(self)

    def start(self) -> None:
        """Begin (a terminal: the live line appears with the first sample)."""
        with self._lock:
            self._rate.add(self.clock(), 0)
            self._last_shown = self.clock()

    def due(self) -> bool:
        """Whether :meth:`show` would show a sample now (a loop that calls it often can skip
        taking one otherwise)."""
        return self.clock() - self._last_shown >= self.interval_s

    def show(self, sample: Sample, *, force: bool = False) -> None:
        """Show ``sample`` if the last one shown is old enough (or ``force``)."""
        with self._lock:
            if self._forked:
                return
            now = self.clock()
            rate = self._rate.add(now, sample.done)
            if not force and now - self._last_shown < self.interval_s:
                return
            self._last_shown = now
            if self.terminal:
                self._draw(sample, rate)
            elif (sample.done, sample.lag) != self._last:
                # A quiet run (nothing read, lag unchanged) logs nothing.
                log.info("%s", progress_line(self.label, sample, rate, self.unit))
            self._last = (sample.done, sample.lag)

    def finish(self, sample: Sample | None = None) -> None:
        """Show ``sample`` (if given) once more, then leave the terminal line as it is."""
        if sample is not None and (self.terminal or self._last is not None):
            self.show(sample, force=True)
        with self._lock:
            if self._bar is not None and not self._forked:
                self._bar.stop()
            self._bar = None

    def _draw(self, sample: Sample, rate: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBar

        if self._bar is None:
            self._bar = RichBar(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                TextColumn("{task.fields[done]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[lag]}"),
                TextColumn("{task.fields[eta]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream, force_terminal=True),
                auto_refresh=False,
                transient=False,
            )
            self._task = self._bar.add_task(
                self.label, total=None, done="", rate="", lag="", eta=""
            )
        detail = f" ({sample.detail})" if sample.detail else ""
        total = None if sample.lag is None else sample.done + sample.lag
        self._bar.update(
            self._task,
            completed=sample.done,
            total=total,
            done=f"{sample.done:,} {self.unit}{detail}",
            rate=f"{rate:,.0f} {self.unit}/s",
            lag="lag ?" if sample.lag is None else f"lag {sample.lag:,}",
            eta=eta_text(sample.lag, rate),
        )
        if self._bar.live.is_started:
            self._bar.refresh()
        else:
            self._bar.start()  # (draws the first line)


#: Every display of this process, for the fork handlers.
_DISPLAYS: weakref.WeakSet[ProgressDisplay] = weakref.WeakSet()


def _before_fork() -> None:
    """No display is half-way through a line (and its stream's lock) while the process forks."""
    for display in list(_DISPLAYS):
        display._lock.acquire()


def _after_fork_in_parent() -> None:
    for display in list(_DISPLAYS):
        display._lock.release()


def _after_fork_in_child() -> None:
    """The child drops its copies of the parent's displays and writes to the real stderr.
    (No import here: a child about to exec should not load anything.)"""
    for display in list(_DISPLAYS):
        display._forked = True
        display._lock = threading.Lock()  # (the copy is held: the parent's before-fork hook)
    for name in ("stdout", "stderr"):
        proxied = getattr(getattr(sys, name), "rich_proxied_file", None)  # rich's FileProxy
        if proxied is not None:
            setattr(sys, name, proxied)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class ProgressThread:
    """Calls ``sample()`` every ``display.interval_s`` on a daemon thread and shows it;
    :meth:`stop` shows a last sample. ``sample`` returning ``None`` means "nothing to show
    yet" (e.g. the run has not started reading)."""

    def __init__(self, display: ProgressDisplay, sample: Callable[[], Sample | None]) -> None:
        self.display = display
        self.sample = sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._stopped = False

    def start(self) -> ProgressThread:
        self.display.start()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.display.interval_s):
            try:
                taken = self.sample()
            except Exception:  # a progress line must never stop the work it reports on
                continue
            if taken is not None:
                self.display.show(taken)

    def stop(self, *, final: bool = True) -> None:
        """Stop sampling; with ``final``, show one last sample (the end state). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        last = None
        if final:
            try:
                last = self.sample()
            except Exception:
                last = None
        self.display.finish(last)
