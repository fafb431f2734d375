"""The design note's claim, measured: the breakdown as a PostgreSQL query vs. jobpulse's Redis.

    python -m benchmarks.postgres_claim [--sizes 10000,1000000,10000000] [--reads 50]
                                        [--inserts 20] [--cli-runs 3] [--seed 7]

The claim: *querying a 100M-row table for the breakdown, even with the right indexes, is slow,
and would have to run again for every insert*, whereas jobpulse keeps the counts themselves
in Redis.

In a throw-away PostgreSQL schema (created here, dropped at the end), the sink's own migration
(:func:`jobpulse.postgres.schema.migrate`) creates ``offers`` and its partial index
``offers_open_cells``. The table then grows to each of ``--sizes`` in turn (10k, then 990k
more, then 9M more) with binary ``COPY`` (one transaction per step; a thread encodes the rows
with numpy while the previous chunk is sent, so the client is not the bottleneck), each step
followed by ``VACUUM (ANALYZE, INDEX_CLEANUP ON)`` (so the visibility map is current and the
index-only scan needs no heap fetches). *load s* is the COPY, *vacuum s* the VACUUM.

The offers: the 7 categories of the public data set plus ``Unknown``, weighted as in it
(Business 1445, Tech 1439, Marketing / Comm' 782, Retail 536, Admin 411, Créa 212,
Conseil 175, no profession 69); continents skewed towards Europe (80 %, as the data set is
mostly France; ``Unknown`` 0.85 % with no coordinates, as 43 of its 5069 rows); 20 % closed
(``closed_at`` set); its contract types' mix; random coordinates (they need not match the
continent: no geocoding happens here); ids ``bench-<n>``; every NOT NULL column filled.

At each size:

- *Postgres*: ``EXPLAIN (ANALYZE, BUFFERS)`` of :data:`~jobpulse.postgres.breakdown.BREAKDOWN_SQL`
  once (the plan kind: index-only scan? parallel? heap fetches? JIT?), then ``--reads``
  timed runs (execute + fetch all rows, on one open connection, server defaults): p50 / p99.
- *Redis*: the same counts written under a throw-away prefix with :meth:`Store.write` (what
  the dataflow's Redis sink calls), then ``--reads`` timed :meth:`Store.breakdown` calls
  (what ``jobpulse breakdown`` and the dashboard read): p50 / p99. Both answers are checked
  to be the same counts (else MISMATCH and exit status 1).
- The two sides' reads are interleaved (so both see the same background load), after 2
  untimed warm-up reads each.
- ``jobpulse breakdown --json`` end to end as a subprocess, ``--cli-runs`` times (median):
  mostly Python start-up and imports, shown next to a bare ``python -c pass``.
- *"would have to run again for every insert"*: ``--inserts`` times, one single-row INSERT
  (autocommit) followed by the breakdown query, vs. what jobpulse does per offer: one
  :meth:`Store.write` of the changed cell, then :meth:`Store.breakdown` (the read costs the
  same whatever came in). p50 of each pair. The inserted rows are deleted afterwards.

Prints a table and a verdict computed from the numbers. The schema and the Redis prefix are
removed at the end, also after an error, Ctrl-C or SIGTERM. With p99 over 50 reads, p99 is
close to the slowest read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson
import psycopg

from jobpulse import pg
from jobpulse import settings as settings_module
from jobpulse.delta import CONTINENTS, Cell
from jobpulse.errors import JobpulseError
from jobpulse.offer import UNKNOWN
from jobpulse.offer_row import PARTITION_BITS
from jobpulse.postgres import schema
from jobpulse.postgres.breakdown import BREAKDOWN_SQL, open_counts
from jobpulse.settings import Settings, child_env
from jobpulse.store import Store

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = "10000,1000000,10000000"

#: Category → weight: offers per category in the public data set (no profession: Unknown).
CATEGORY_WEIGHTS: dict[str, float] = {
    "Business": 1445,
    "Tech": 1439,
    "Marketing / Comm'": 782,
    "Retail": 536,
    "Admin": 411,
    "Créa": 212,
    "Conseil": 175,
    UNKNOWN: 69,
}
#: Continent → weight (%), skewed towards Europe like the data set (~90 % France).
CONTINENT_WEIGHTS: dict[str, float] = {
    "Europe": 80.0,
    "North America": 6.0,
    "Asia": 5.0,
    "Africa": 3.0,
    "South America": 2.5,
    "Oceania": 1.6,
    "Antarctica": 0.05,
    UNKNOWN: 0.85,
}
assert set(CONTINENT_WEIGHTS) == {*CONTINENTS, UNKNOWN}
#: Contract type → offers in the public data set.
CONTRACT_WEIGHTS: dict[str, float] = {
    "FULL_TIME": 3091,
    "INTERNSHIP": 1292,
    "APPRENTICESHIP": 423,
    "TEMPORARY": 211,
    "FREELANCE": 38,
    "VIE": 10,
    "PART_TIME": 4,
}
TITLES = (
    "Business Developer",
    "Développeur Python",
    "Chargé de communication",
    "Vendeur en boutique",
    "Assistant administratif",
    "Directeur artistique",
    "Consultant SI",
    "Data Engineer",
    "Account Executive H/F",
    "Stage - Marketing digital",
    "Office Manager",
    "[Brand] Product Designer",
)
CLOSED_SHARE = 0.20
PROFESSIONS = 42
PARTITIONS = 12
#: Rows encoded and sent per COPY write.
CHUNK_ROWS = 200_000
WARM_UP_READS = 2
#: Redis p50 growth (largest / smallest size) still counted as flat.
REDIS_NOISE = 3.0

#: The columns COPY fills, in the order the encoder writes them.
COPY_SQL = (
    "COPY offers (id, category, continent, latitude, longitude, profession_id, name, "
    "contract_type, published_at, opened_at, closed_at, source_partition, source_offset, "
    "source_timestamp, version, updated_at) FROM STDIN (FORMAT BINARY)"
)
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
#: PostgreSQL's timestamp epoch (2000-01-01) in Unix microseconds.
PG_EPOCH_US = 946_684_800_000_000
#: Offers are published over the year before this instant (Unix µs).
PUBLISHED_UNTIL_US = 1_767_225_600_000_000  # 2026-01-01
YEAR_US = 365 * 86_400_000_000

INSERT_SQL = (
    "INSERT INTO offers (id, category, continent, latitude, longitude, profession_id, name, "
    "contract_type, published_at, opened_at, source_partition, source_offset, "
    "source_timestamp, version, updated_at) VALUES "
    "(%s, %s, %s, 48.85, 2.35, 3, 'Développeur Python', 'FULL_TIME', now(), now(), 0, %s, "
    "now(), %s, now())"
)
INSERT_ID_PREFIX = "bench-insert-"
INSERT_CELL = Cell("Tech", "Europe")


# -- the offers, encoded for binary COPY ------------------------------------------------------


@dataclass
class Column:
    """One column of a chunk, encoded: row ``i`` is ``matrix[i, :sizes[i]]`` (its length word,
    then its data), the rest of the row padding."""

    matrix: np.ndarray
    sizes: np.ndarray


def _word(data: bytes | None) -> bytes:
    """A field: its length word, then the data (NULL: length -1, no data)."""
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def fixed(values: np.ndarray, null: np.ndarray | None = None) -> Column:
    """A fixed-size binary column (``values`` already big-endian, e.g. ``>f8``)."""
    width = values.dtype.itemsize
    records = np.empty(len(values), dtype=[("length", ">i4"), ("value", values.dtype)])
    records["length"] = width
    records["value"] = values
    sizes = np.full(len(values), 4 + width)
    if null is not None:
        records["length"][null] = -1
        sizes[null] = 4
    return Column(records.view(np.uint8).reshape(len(values), 4 + width), sizes)


def vocabulary(words: Sequence[str | None], index: np.ndarray) -> Column:
    """A text column whose row ``i`` is ``words[index[i]]`` (``None``: NULL)."""
    encoded = [_word(None if w is None else w.encode()) for w in words]
    table = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.uint8)
    for k, word in enumerate(encoded):
        table[k, : len(word)] = np.frombuffer(word, np.uint8)
    return Column(table[index], np.array([len(e) for e in encoded])[index])


def offer_ids(numbers: np.ndarray) -> Column:
    """Text ``bench-<n>``."""
    prefix = b"bench-"
    digits = np.searchsorted(10 ** np.arange(1, 19, dtype=np.int64), numbers, side="right") + 1
    width = int(digits.max())
    matrix = np.zeros((len(numbers), 4 + len(prefix) + width), dtype=np.uint8)
    matrix[:, :4] = (len(prefix) + digits).astype(">i4").view(np.uint8).reshape(-1, 4)
    matrix[:, 4 : 4 + len(prefix)] = np.frombuffer(prefix, np.uint8)
    # Digit j (0 = most significant) of a number of d digits: n // 10**(d - 1 - j) % 10.
    exponent = digits[:, None] - 1 - np.arange(width)
    text = numbers[:, None] // 10 ** np.maximum(exponent, 0) % 10 + ord("0")
    matrix[:, 4 + len(prefix) :] = np.where(exponent >= 0, text, 0)
    return Column(matrix, 4 + len(prefix) + digits)


def encode(columns: Sequence[Column]) -> bytes:
    """Binary COPY tuples of ``columns`` (no signature, no trailer): the padded columns side by
    side, then the padding dropped (boolean indexing flattens row by row)."""
    rows = len(columns[0].sizes)
    width = 2 + sum(c.matrix.shape[1] for c in columns)
    matrix = np.empty((rows, width), dtype=np.uint8)
    kept = np.empty((rows, width), dtype=bool)
    matrix[:, :2] = np.frombuffer(struct.pack(">h", len(columns)), np.uint8)
    kept[:, :2] = True
    at = 2
    for column in columns:
        end = at + column.matrix.shape[1]
        matrix[:, at:end] = column.matrix
        np.less(np.arange(end - at), column.sizes[:, None], out=kept[:, at:end])
        at = end
    return matrix[kept].tobytes()


def _probabilities(weights: dict[str, float]) -> np.ndarray:
    values = np.array(list(weights.values()), dtype=float)
    return values / values.sum()


CATEGORIES = list(CATEGORY_WEIGHTS)
CONTINENT_NAMES = list(CONTINENT_WEIGHTS)
UNKNOWN_CATEGORY = CATEGORIES.index(UNKNOWN)
UNKNOWN_CONTINENT = CONTINENT_NAMES.index(UNKNOWN)


def offers_chunk(first: int, count: int, seed: int, now_us: int) -> tuple[bytes, np.ndarray]:
    """Offers ``bench-<first>`` … ``bench-<first + count - 1>`` as binary COPY tuples, and
    their open offers per cell (a categories × continents matrix)."""
    rng = np.random.default_rng([seed, first])
    category = rng.choice(len(CATEGORIES), count, p=_probabilities(CATEGORY_WEIGHTS))
    continent = rng.choice(len(CONTINENT_NAMES), count, p=_probabilities(CONTINENT_WEIGHTS))
    contract = rng.choice(len(CONTRACT_WEIGHTS), count, p=_probabilities(CONTRACT_WEIGHTS))
    title = rng.integers(0, len(TITLES), count)
    closed = rng.random(count) < CLOSED_SHARE
    no_place = continent == UNKNOWN_CONTINENT
    published = PUBLISHED_UNTIL_US - rng.integers(0, YEAR_US, count)
    closed_at = published + rng.integers(3_600_000_000, 60 * 86_400_000_000, count)
    changed = np.where(closed, closed_at, published)  # the newest record of the offer
    partition = rng.integers(0, PARTITIONS, count)
    columns = [
        offer_ids(np.arange(first, first + count, dtype=np.int64)),
        vocabulary(CATEGORIES, category),
        vocabulary(CONTINENT_NAMES, continent),
        fixed(rng.uniform(-60.0, 70.0, count).astype(">f8"), no_place),
        fixed(rng.uniform(-180.0, 180.0, count).astype(">f8"), no_place),
        fixed(rng.integers(1, PROFESSIONS + 1, count).astype(">i8"), category == UNKNOWN_CATEGORY),
        vocabulary(TITLES, title),
        vocabulary(list(CONTRACT_WEIGHTS), contract),
        fixed((published - PG_EPOCH_US).astype(">i8")),
        fixed((published - PG_EPOCH_US).astype(">i8")),
        fixed((closed_at - PG_EPOCH_US).astype(">i8"), ~closed),
        fixed(partition.astype(">i4")),
        fixed(np.arange(first, first + count, dtype=np.int64).astype(">i8")),
        fixed((changed - PG_EPOCH_US).astype(">i8")),
        fixed((((changed // 1000) << PARTITION_BITS) | partition).astype(">i8")),
        fixed(np.full(count, now_us - PG_EPOCH_US, dtype=">i8")),
    ]
    open_cells = np.zeros((len(CATEGORIES), len(CONTINENT_NAMES)), dtype=np.int64)
    np.add.at(open_cells, (category[~closed], continent[~closed]), 1)
    return encode(columns), open_cells


def load(conn: psycopg.Connection[Any], first: int, count: int, seed: int) -> np.ndarray:
    """COPY ``count`` offers from ``bench-<first>`` in one transaction; their open cells.

    A thread encodes the next chunks (numpy releases the GIL) while this one sends, so the
    encoding overlaps with PostgreSQL's work instead of adding to it.
    """
    now_us = time.time_ns() // 1000
    starts = range(first, first + count, CHUNK_ROWS)
    chunks: queue.Queue[tuple[bytes, np.ndarray] | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        for start in starts:
            try:
                item: tuple[bytes, np.ndarray] | BaseException = offers_chunk(
                    start, min(CHUNK_ROWS, first + count - start), seed, now_us
                )
            except BaseException as exc:
                item = exc
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    chunks.put(item, timeout=0.2)
                    break
            if stop.is_set() or isinstance(item, BaseException):
                return

    producer = threading.Thread(target=produce, name="encode-offers", daemon=True)
    producer.start()
    open_cells = np.zeros((len(CATEGORIES), len(CONTINENT_NAMES)), dtype=np.int64)
    try:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            copy.write(COPY_SIGNATURE)
            for _ in starts:
                item = chunks.get()
                if isinstance(item, BaseException):
                    raise item
                data, cells = item
                copy.write(data)
                open_cells += cells
            copy.write(COPY_TRAILER)
    finally:
        stop.set()
        producer.join()
    return open_cells


def cells_of(open_cells: np.ndarray) -> dict[Cell, int]:
    """Every cell's count (zeros included: :meth:`Store.write` removes those)."""
    return {
        Cell(category, continent): int(open_cells[i, j])
        for i, category in enumerate(CATEGORIES)
        for j, continent in enumerate(CONTINENT_NAMES)
    }


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Result:
    """Everything measured at one table size."""

    size: int
    open_offers: int
    load_s: float
    vacuum_s: float
    total_mb: float
    index_mb: float
    plan: str
    pg_ms: list[float]
    redis_ms: list[float]
    cli_s: list[float]
    insert_query_ms: list[float] = field(default_factory=list)
    insert_ms: list[float] = field(default_factory=list)
    write_read_ms: list[float] = field(default_factory=list)
    agree: bool = True


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def timed_ms(
    first: Callable[[], object], second: Callable[[], object], times: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``times`` calls of each, interleaved (whichever goes first alternates),
    so both see the same background load; after :data:`WARM_UP_READS` untimed calls each."""
    for _ in range(WARM_UP_READS):
        first()
        second()
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(times):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            began = time.perf_counter()
            (first, second)[k]()
            samples[k].append((time.perf_counter() - began) * 1000)
    return samples


def plan_of(conn: psycopg.Connection[Any]) -> str:
    """The breakdown's plan in a few words, from one ``EXPLAIN (ANALYZE, BUFFERS)``."""
    explained = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {BREAKDOWN_SQL}").fetchone()
    assert explained is not None
    top = explained[0][0]
    nodes, scans, workers = [top["Plan"]], [], None
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if node["Node Type"].startswith("Gather"):
            workers = node.get("Workers Launched")
        if "Scan" in node["Node Type"]:
            scans.append(node)
    parts = []
    for scan in scans:
        name = ("Parallel " if scan.get("Parallel Aware") else "") + scan["Node Type"]
        target = scan.get("Index Name") or scan.get("Relation Name")
        text = f"{name} on {target}"
        if "Heap Fetches" in scan:
            text += f", heap fetches {scan['Heap Fetches']}"
        read = scan.get("Shared Hit Blocks", 0) + scan.get("Shared Read Blocks", 0)
        text += f", {read:,} pages"
        parts.append(text)
    if workers is not None:
        parts.append(f"{workers} workers launched")
    if "JIT" in top:
        parts.append(f"JIT {top['JIT']['Timing']['Total']:.0f} ms")
    parts.append(f"{top['Execution Time']:.1f} ms under EXPLAIN ANALYZE")
    return "; ".join(parts)


def cli_command() -> list[str]:
    """The ``jobpulse`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("jobpulse")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobpulse"]


def run_cli(settings: Settings, runs: int, expected_total: int) -> list[float]:
    """``jobpulse breakdown --json`` ``runs`` times: the seconds each took, start to exit."""
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run(
            [*cli_command(), "breakdown", "--json"],
            env=child_env(settings),
            cwd=REPO,
            capture_output=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        seconds.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"jobpulse breakdown --json failed: {done.stderr.decode()}")
        total = orjson.loads(done.stdout)["total"]
        if total != expected_total:
            raise RuntimeError(f"jobpulse breakdown --json says {total}, expected {expected_total}")
    return seconds


def python_start_s(runs: int) -> float:
    """Median seconds of a bare ``python -c pass`` (this interpreter)."""
    seconds = []
    for _ in range(max(runs, 1)):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        seconds.append(time.perf_counter() - began)
    return p50(seconds)


def insert_then_query(
    conn: psycopg.Connection[Any], store: Store, result: Result, times: int, base: int
) -> None:
    """``times`` × (one INSERT + the breakdown query) vs. (one Store.write + Store.breakdown)."""
    cell_count = store.cells().get(INSERT_CELL, 0)
    for k in range(times):
        began = time.perf_counter()
        conn.execute(INSERT_SQL, (f"{INSERT_ID_PREFIX}{k}", *INSERT_CELL, base + k, base + k))
        inserted = time.perf_counter()
        conn.execute(BREAKDOWN_SQL).fetchall()
        done = time.perf_counter()
        result.insert_ms.append((inserted - began) * 1000)
        result.insert_query_ms.append((done - began) * 1000)

        began = time.perf_counter()
        store.write(cells={INSERT_CELL: cell_count + k + 1})
        store.breakdown()
        result.write_read_ms.append((time.perf_counter() - began) * 1000)
    conn.execute("DELETE FROM offers WHERE id LIKE %s", (f"{INSERT_ID_PREFIX}%",))
    store.write(cells={INSERT_CELL: cell_count})


def measure_size(
    conn: psycopg.Connection[Any],
    store: Store,
    settings: Settings,
    args: argparse.Namespace,
    size: int,
    loaded: int,
    open_cells: np.ndarray,
) -> Result:
    """Grow the table from ``loaded`` to ``size`` offers (``open_cells`` updated in place),
    then measure both sides."""
    began = time.perf_counter()
    open_cells += load(conn, loaded, size - loaded, args.seed)
    load_s = time.perf_counter() - began
    # INDEX_CLEANUP ON: with the few rows the INSERT test deleted, VACUUM would otherwise skip
    # index vacuuming and leave their line pointers, keeping their page off the visibility
    # map (the index-only scan would then visit it for every open offer on it).
    began = time.perf_counter()
    conn.execute("VACUUM (ANALYZE, INDEX_CLEANUP ON) offers")
    vacuum_s = time.perf_counter() - began
    sizes = conn.execute(
        "SELECT pg_total_relation_size('offers'), pg_relation_size('offers_open_cells')"
    ).fetchone()
    assert sizes is not None
    open_offers = int(open_cells.sum())
    print(
        f"{size:>12,} offers ({open_offers:,} open): COPY {load_s:.1f} s "
        f"({(size - loaded) / load_s:,.0f} rows/s), VACUUM ANALYZE {vacuum_s:.1f} s, "
        f"table + indexes {sizes[0] / 2**20:,.0f} MB",
        flush=True,
    )

    store.write(cells=cells_of(open_cells))
    plan = plan_of(conn)
    expected = {cell: n for cell, n in cells_of(open_cells).items() if n}
    agree = open_counts(conn) == expected == store.cells()
    print(f"{'':>12}  plan: {plan}", flush=True)
    pg_ms, redis_ms = timed_ms(
        lambda: conn.execute(BREAKDOWN_SQL).fetchall(), store.breakdown, args.reads
    )
    cli_s = run_cli(settings, args.cli_runs, open_offers) if args.cli_runs else []
    result = Result(
        size=size,
        open_offers=open_offers,
        load_s=load_s,
        vacuum_s=vacuum_s,
        total_mb=sizes[0] / 2**20,
        index_mb=sizes[1] / 2**20,
        plan=plan,
        pg_ms=pg_ms,
        redis_ms=redis_ms,
        cli_s=cli_s,
        agree=agree,
    )
    if args.inserts:
        insert_then_query(conn, store, result, args.inserts, size)
    print(
        f"{'':>12}  Postgres p50 {p50(pg_ms):.2f} ms, Redis p50 {p50(redis_ms):.3f} ms"
        + ("" if agree else "; MISMATCH: Postgres and Redis counts differ"),
        flush=True,
    )
    return result


# -- report -----------------------------------------------------------------------------------


def report(results: list[Result], python_s: float, args: argparse.Namespace) -> None:
    print()
    print(
        f"{'size':>12} {'load s':>7} {'vacuum s':>8} {'table+index MB':>14} {'partial idx MB':>14} "
        f"{'Postgres p50/p99 ms':>20} {'Redis p50/p99 ms':>17} {'ratio p50':>9}"
    )
    for r in results:
        print(
            f"{r.size:>12,} {r.load_s:>7.1f} {r.vacuum_s:>8.1f} {r.total_mb:>14,.0f} "
            f"{r.index_mb:>14.1f} {p50(r.pg_ms):>9.2f} / {p99(r.pg_ms):>8.2f} "
            f"{p50(r.redis_ms):>7.3f} / {p99(r.redis_ms):>7.3f} "
            f"{p50(r.pg_ms) / p50(r.redis_ms):>8,.0f}×"
        )
    print(
        f"({args.reads} timed reads per side, interleaved, after {WARM_UP_READS} warm-up ones, on "
        "one open connection each; Postgres: execute + fetch the ~60 rows; Redis: "
        "Store.breakdown(), what `jobpulse breakdown` and the dashboard call)"
    )
    print(
        "\nplans (one EXPLAIN ANALYZE per size, its time inflated by the per-row instrumentation):"
    )
    for r in results:
        print(f"{r.size:>12,}  {r.plan}")

    if any(r.insert_query_ms for r in results) or any(r.cli_s for r in results):
        print(
            f"\n{'size':>12} {'INSERT + query p50 ms':>21} {'(INSERT alone)':>14} "
            f"{'jobpulse write + read p50 ms':>28} {'`jobpulse breakdown --json` s':>29}"
        )
        for r in results:
            cli = f"{p50(r.cli_s):.2f}" if r.cli_s else "-"
            if r.insert_query_ms:
                pg_pair = f"{p50(r.insert_query_ms):>21.2f} {p50(r.insert_ms):>14.2f}"
                redis_pair = f"{p50(r.write_read_ms):>28.3f}"
            else:
                pg_pair, redis_pair = f"{'-':>21} {'-':>14}", f"{'-':>28}"
            print(f"{r.size:>12,} {pg_pair} {redis_pair} {cli:>29}")
        print(
            f"(INSERT: one row, autocommit, then the breakdown query, {args.inserts}×; jobpulse: "
            "Store.write of the changed cell, then Store.breakdown(). `jobpulse breakdown "
            f"--json`: a subprocess, median of {args.cli_runs}, Python start-up and imports "
            f"included — a bare `python -c pass` takes {python_s:.2f} s here)"
        )
    print()
    print(verdict(results))


def verdict(results: list[Result]) -> str:
    """One line, from the numbers."""
    if not all(r.agree for r in results):
        return "verdict: none — Postgres and Redis disagreed on the counts (see MISMATCH above)"
    first, last = results[0], results[-1]
    pg_first, pg_last = p50(first.pg_ms), p50(last.pg_ms)
    redis_first, redis_last = p50(first.redis_ms), p50(last.redis_ms)
    ratio = pg_last / redis_last
    if len(results) == 1:
        return (
            f"verdict: at {last.size:,} offers the Postgres breakdown takes {pg_last:.1f} ms "
            f"(p50), Redis {redis_last:.2f} ms: {ratio:,.0f}× (one size: no growth measured)"
        )
    rows_growth = last.size / first.size
    pg_growth = pg_last / pg_first
    redis_growth = redis_last / redis_first
    per_million = (pg_last - p50(results[-2].pg_ms)) / (last.size - results[-2].size) * 1e6
    at_100m = pg_last + per_million * (100e6 - last.size) / 1e6
    # Redis reads the same ~60 fields at every size: anything under ×3 is noise, not growth.
    redis_flat = redis_growth < REDIS_NOISE
    # "Grows with the table": at least half as many orders of magnitude as the rows.
    pg_grows = pg_growth >= rows_growth**0.5
    claim_holds = pg_grows and redis_flat and ratio > 1
    pg_words = "grows with the table" if pg_grows else "grows far less than the table"
    redis_words = "stays flat" if redis_flat else f"grows too (×{redis_growth:.1f})"
    line = (
        f"verdict: {'the claim holds' if claim_holds else 'the claim is not borne out'} — "
        f"Postgres {pg_words} (p50 {pg_first:.1f} → {pg_last:,.1f} ms, ×{pg_growth:,.0f} for "
        f"×{rows_growth:,.0f} rows; linear extrapolation ~{at_100m / 1000:,.1f} s at 100M), "
        f"Redis {redis_words} ({redis_first:.2f} → {redis_last:.2f} ms): {ratio:,.0f}× faster "
        f"at {last.size:,}"
    )
    inserts = [r for r in results if r.insert_query_ms]
    if inserts:
        line += (
            f"; per new offer, INSERT + re-query {p50(inserts[-1].insert_query_ms):,.0f} ms vs "
            f"jobpulse's write + read {p50(inserts[-1].write_read_ms):.2f} ms"
        )
    return line


# -- set-up and clean-up ------------------------------------------------------------------------


def schema_url(url: str, name: str) -> str:
    """``url`` whose connections use schema ``name`` first (``options=-csearch_path=…``)."""
    if "://" not in url:  # a key=value conninfo string
        return f"{url} options='-csearch_path={name}'"
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={name}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres_claim")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"table sizes the table grows through (default {DEFAULT_SIZES})",
    )
    parser.add_argument("--reads", type=int, default=50, help="timed reads per side and size")
    parser.add_argument(
        "--inserts", type=int, default=20, help="INSERT + query pairs per size (0: skip)"
    )
    parser.add_argument(
        "--cli-runs", type=int, default=3, help="`jobpulse breakdown --json` runs (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.reads < 1:
        parser.error("--reads must be at least 1")

    base = settings_module.load()
    tag = uuid.uuid4().hex[:8]
    name = f"bench_pgclaim_{tag}"
    settings = base.with_overrides(
        redis_prefix=f"bench-pgclaim-{tag}", postgres_url=schema_url(base.postgres_url, name)
    )
    signal.signal(signal.SIGTERM, _terminated)
    try:
        admin = pg.connect(base, autocommit=True)
        store = Store.connect(settings)
    except JobpulseError as exc:
        print(f"postgres_claim: {exc}", file=sys.stderr)
        return 1
    conn: psycopg.Connection[Any] | None = None
    try:
        admin.execute(f'CREATE SCHEMA "{name}"')
        conn = pg.connect(settings, autocommit=True)
        schema.migrate(conn)
        show = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('shared_buffers', 'max_parallel_workers_per_gather', 'jit', 'work_mem')"
            )
        }
        print(
            f"PostgreSQL {pg.format_version(conn.info.server_version)} (schema {name}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(show.items()))
            + f"), Redis prefix {settings.redis_prefix}, {os.cpu_count()} CPUs",
            flush=True,
        )
        python_s = python_start_s(args.cli_runs) if args.cli_runs else 0.0
        results: list[Result] = []
        open_cells = np.zeros((len(CATEGORIES), len(CONTINENT_NAMES)), dtype=np.int64)
        loaded = 0
        for size in args.sizes:
            results.append(measure_size(conn, store, settings, args, size, loaded, open_cells))
            loaded = size
        report(results, python_s, args)
        return 0 if all(r.agree for r in results) else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean_up(conn, admin, store, name)


def clean_up(
    conn: psycopg.Connection[Any] | None,
    admin: psycopg.Connection[Any],
    store: Store,
    name: str,
) -> None:
    """Drop the schema and the Redis prefix (best effort, each step on its own)."""
    sys.stdout.flush()
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()  # its backend ends: a COPY in progress is rolled back
    try:
        admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    except psycopg.Error as exc:
        print(f"clean-up: could not drop schema {name}: {exc}", file=sys.stderr)
    finally:
        admin.close()
    try:
        removed = store.clear()
        print(f"cleaned up: schema {name} dropped, {removed} Redis keys removed", file=sys.stderr)
    except Exception as exc:
        print(f"clean-up: Redis prefix {store.keys.prefix}: {exc}", file=sys.stderr)
    finally:
        store.client.close()


if __name__ == "__main__":
    sys.exit(main())
