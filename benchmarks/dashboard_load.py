"""Dashboard page loads under concurrency, with Kubernetes-style ``/healthz`` probes meanwhile.

    python -m benchmarks.dashboard_load [--pages 20] [--rounds 3] [--processes N] [--html-only]

Starts a real ``jobpulse dashboard`` on a free port against the running Redis (its own key
prefix, filled through :class:`jobpulse.store.Store` with 6 categories × 8 continents, 30
windows and 12 partitions; removed at the end). Each round fires ``--pages`` concurrent page
loads, each one what a browser does with the server: ``GET /`` (the full page HTML; Bokeh
creates the session's document for it) then, unless ``--html-only``, the websocket with the
page's token and ``PULL-DOC-REQ`` until the page's models have arrived (in the reply, or in
a later ``PATCH-DOC`` when the server builds them after answering the ``GET``). Meanwhile
``GET /healthz`` is sent every ``--probe-every`` seconds (each probe on its own, not waiting
for the previous one) from the burst's start until ``--settle`` seconds after its end
(closed sessions are discarded then), with the Kubernetes default probe timeout of 1 s.

Prints p50/p99 of the page HTML and of the whole load (page models received), pages/s, and
the health probes' failures (not 200 within ``--probe-timeout``) and latencies. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from benchmarks import _bokeh_session as bokeh_session
from jobpulse import delta, processes
from jobpulse import settings as settings_module
from jobpulse.delta import Cell
from jobpulse.offer import UNKNOWN
from jobpulse.settings import Settings, child_env
from jobpulse.store import PartitionProgress, Store, WindowCounts

CATEGORIES = ["Tech", "Business", "Retail", "Admin", "Marketing / Communication", "Unknown"]
CONTINENTS = [*delta.CONTINENTS, UNKNOWN]
#: The page's HTML may be slow to come under load; it is measured, not cut short.
HTML_TIMEOUT_S = 120.0
#: A document that has not arrived by then will not (the server failed to serialize it).
PULL_TIMEOUT_S = 60.0


# -- results ---------------------------------------------------------------------------
@dataclass
class PageLoad:
    """One page load: seconds to the HTML and to the page's models (``None``: not pulled, or
    ``error`` when that failed)."""

    html_s: float
    doc_s: float | None
    error: str | None = None


@dataclass
class Probe:
    """One ``/healthz`` probe: when it was sent (s, ``time.perf_counter``), its latency (s)
    and whether it answered 200 in time."""

    sent_at: float
    latency_s: float
    ok: bool


@dataclass
class Round:
    """What one burst measured."""

    loads: list[PageLoad] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    began: float = 0.0
    wall_s: float = 0.0

    def probes_during_burst(self) -> list[Probe]:
        """The probes sent before the last page load ended."""
        return [p for p in self.probes if p.sent_at < self.began + self.wall_s]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


# -- the dashboard under test ----------------------------------------------------------
def free_port() -> int:
    """A local TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(store: Store, window_seconds: int) -> None:
    """Write a realistic breakdown, 30 windows and 12 partitions' progress."""
    cells = {
        Cell(category, continent): 1 + (7 * i + 3 * j) % 40
        for i, category in enumerate(CATEGORIES)
        for j, continent in enumerate(CONTINENTS)
    }
    window_ms = window_seconds * 1000
    newest = int(time.time() * 1000) // window_ms * window_ms
    windows = {
        newest - k * window_ms: WindowCounts(
            newest - k * window_ms,
            opened={Cell("Tech", c): 1 + (k + j) % 9 for j, c in enumerate(CONTINENTS)},
            closed={Cell("Retail", c): (k * j) % 5 for j, c in enumerate(CONTINENTS)},
        )
        for k in range(30)
    }
    partitions = {p: PartitionProgress(offset=1000 + p, records=1000 + p) for p in range(12)}
    store.write(cells=cells, windows=windows, partitions=partitions)


@contextlib.contextmanager
def running_dashboard(settings: Settings, workers: int | None, log: IO[bytes]) -> Iterator[str]:
    """``jobpulse dashboard`` in a subprocess on a free port until the block ends; its URL.

    Its output goes to ``log`` (a pipe nobody reads would block it once full).
    """
    port = free_port()
    command = [sys.executable, "-m", "jobpulse", "dashboard", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    if workers is not None:
        command += ["--processes", str(workers)]
    process = subprocess.Popen(
        command, env=child_env(settings), stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_healthy(process, url, log, timeout_s=60)
        yield url
    finally:
        processes.stop_child(process, signal.SIGTERM, 15)


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, log: IO[bytes], timeout_s: float
) -> None:
    """Wait until ``/healthz`` answers; exit with the dashboard's output if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            sys.exit(f"the dashboard exited with {process.returncode}:\n{log.read().decode()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "healthz", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    sys.exit(f"the dashboard did not answer within {timeout_s:.0f} s")


def logged_errors(log: IO[bytes]) -> list[str]:
    """The dashboard's logged errors (first line of each)."""
    log.seek(0)
    return [line for line in log.read().decode(errors="replace").splitlines() if "ERROR" in line]


# -- one page load, as the browser does it ---------------------------------------------
async def load_page(client: AsyncHTTPClient, url: str, pull: bool) -> PageLoad:
    """``GET /`` then (``pull``) the page's websocket until the page's models came (see
    :mod:`benchmarks._bokeh_session`)."""
    began = time.perf_counter()
    page_html = await bokeh_session.fetch_page(client, url, timeout_s=HTML_TIMEOUT_S)
    html_s = time.perf_counter() - began
    if not pull:
        return PageLoad(html_s, None)
    try:
        token = bokeh_session.session_token(page_html)
        await bokeh_session.pull_document(url, token, timeout_s=PULL_TIMEOUT_S)
    except (RuntimeError, TimeoutError, OSError) as exc:
        return PageLoad(html_s, None, error=f"{type(exc).__name__}: {exc}")
    return PageLoad(html_s, time.perf_counter() - began)


# -- health probes ---------------------------------------------------------------------
async def probe(client: AsyncHTTPClient, url: str, timeout_s: float) -> Probe:
    """One ``GET /healthz``; failed unless 200 within ``timeout_s``."""
    began = time.perf_counter()
    try:
        response = await client.fetch(url + "healthz", request_timeout=timeout_s)
        ok = response.code == 200
    except (HTTPClientError, OSError):
        ok = False
    return Probe(began, time.perf_counter() - began, ok)


async def probe_until(
    client: AsyncHTTPClient, url: str, every_s: float, timeout_s: float, stop: asyncio.Event
) -> list[Probe]:
    """Start a probe every ``every_s`` seconds until ``stop`` is set; all their results."""
    tasks: list[asyncio.Task[Probe]] = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(probe(client, url, timeout_s)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return list(await asyncio.gather(*tasks))


# -- a round ---------------------------------------------------------------------------
async def burst(url: str, args: argparse.Namespace) -> Round:
    """``args.pages`` concurrent page loads with health probes meanwhile."""
    client = AsyncHTTPClient(force_instance=True, max_clients=args.pages + 100)
    result = Round()
    stop = asyncio.Event()
    probes = asyncio.create_task(
        probe_until(client, url, args.probe_every, args.probe_timeout, stop)
    )
    began = result.began = time.perf_counter()
    outcomes = await asyncio.gather(
        *(load_page(client, url, not args.html_only) for _ in range(args.pages)),
        return_exceptions=True,
    )
    result.wall_s = time.perf_counter() - began
    for outcome in outcomes:
        if isinstance(outcome, PageLoad):
            result.loads.append(outcome)
            if outcome.error is not None:
                result.errors.append(outcome.error)
        else:
            result.errors.append(f"{type(outcome).__name__}: {outcome}")
    await asyncio.sleep(args.settle)
    stop.set()
    result.probes = await probes
    client.close()
    return result


async def measure(url: str, args: argparse.Namespace) -> list[Round]:
    """One warm-up page load, then ``args.rounds`` bursts."""
    warm = AsyncHTTPClient(force_instance=True)
    await load_page(warm, url, not args.html_only)
    warm.close()
    await asyncio.sleep(args.settle)
    return [await burst(url, args) for _ in range(args.rounds)]


# -- report ----------------------------------------------------------------------------
def row(label: str, rounds: Sequence[Round]) -> str:
    """One line of the table for ``rounds`` taken together."""
    loads = [load for r in rounds for load in r.loads]
    html = [load.html_s for load in loads]
    docs = [load.doc_s for load in loads if load.doc_s is not None]
    probes = [p for r in rounds for p in r.probes]
    failed = sum(not p.ok for p in probes)
    failed_in_burst = sum(not p.ok for r in rounds for p in r.probes_during_burst())
    errors = sum(len(r.errors) for r in rounds)
    # Page loads that got what they asked for (the HTML, or the page's models), per second.
    pages_per_s = sum(load.error is None for load in loads) / sum(r.wall_s for r in rounds)

    def ms(values: Sequence[float], p: float) -> str:
        return "-" if not values else f"{percentile(values, p) * 1000:,.0f}"

    latencies = [p.latency_s for p in probes]
    return (
        f"{label:>6} {pages_per_s:>8.2f} {ms(html, 50):>9} {ms(html, 99):>9} "
        f"{ms(docs, 50):>9} {ms(docs, 99):>9} {errors:>7} {len(probes):>7} "
        f"{failed_in_burst:>6} {failed - failed_in_burst:>6} "
        f"{ms(latencies, 50):>8} {ms(latencies, 100):>8}"
    )


def report(url: str, args: argparse.Namespace, rounds: Sequence[Round]) -> None:
    """Print the table, one line per round and one for all of them."""
    procs = "" if args.processes is None else f" --processes {args.processes}"
    what = "GET /" if args.html_only else "GET / + websocket until the page's models arrive"
    print(
        f"dashboard {url}{procs}: {args.pages} concurrent page loads ({what}) × "
        f"{args.rounds} rounds; /healthz every {args.probe_every * 1000:.0f} ms, "
        f"{args.probe_timeout:.1f} s timeout, until {args.settle:.0f} s after each burst"
    )
    print(
        f"{'round':>6} {'pages/s':>8} {'html p50':>9} {'html p99':>9} {'doc p50':>9} "
        f"{'doc p99':>9} {'errors':>7} {'probes':>7} {'failed':>13} {'hz p50':>8} {'hz max':>8}"
    )
    print(
        f"{'':>6} {'':>8} {'(ms)':>9} {'(ms)':>9} {'(ms)':>9} {'(ms)':>9} {'':>7} {'':>7} "
        f"{'burst':>6} {'after':>6} {'(ms)':>8} {'(ms)':>8}"
    )
    for n, one in enumerate(rounds, 1):
        print(row(str(n), [one]))
    if len(rounds) > 1:
        print(row("all", rounds))
    errors = [error for one in rounds for error in one.errors]
    if errors:
        print(f"{len(errors)} page loads failed, the first: {errors[0][:200]}")


def main() -> None:
    """Parse the options, fill a Redis prefix, start a dashboard, measure, print, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20, help="concurrent page loads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=None, help="dashboard --processes")
    parser.add_argument("--html-only", action="store_true", help="GET / only, no websocket")
    parser.add_argument("--probe-every", type=float, default=0.1, help="seconds")
    parser.add_argument("--probe-timeout", type=float, default=1.0, help="seconds")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after each burst")
    parser.add_argument(
        "--url", help="measure this running dashboard instead (no dashboard started, no data)"
    )
    args = parser.parse_args()
    if args.url:
        url = args.url.rstrip("/") + "/"
        report(url, args, asyncio.run(measure(url, args)))
        return
    settings = settings_module.load().with_overrides(
        redis_prefix=f"bench-dashboard-{uuid.uuid4().hex[:8]}"
    )
    store = Store.connect(settings)
    try:
        fill(store, settings.window_seconds)
        with tempfile.TemporaryFile() as log:
            with running_dashboard(settings, args.processes, log) as url:
                rounds = asyncio.run(measure(url, args))
            report(url, args, rounds)
            errors = logged_errors(log)
            if errors:
                print(f"the dashboard logged {len(errors)} errors, the first: {errors[0]}")
    finally:
        store.clear()
        store.client.close()


if __name__ == "__main__":
    main()
