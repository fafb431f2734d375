"""Pure transforms from what Redis holds to what the dashboard draws.

Nothing here does I/O or touches Bokeh: the feed hands a :class:`Snapshot` in, these
functions turn it into plain column dicts (the ``ColumnDataSource.data`` shapes; the table's
rows and columns come from :mod:`jobpulse.breakdown`, shared with the CLI), headline
numbers and health rows, and compute the smallest update (patch / stream) between two
column dicts so the browser receives only what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobpulse.breakdown import Columns, category_order, continent_columns
from jobpulse.delta import CONTINENTS
from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown, PartitionProgress, WindowCounts, totals

#: Distinct, readable colours (Tableau 10 + a few), assigned to categories by name order.
PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#17becf",
    "#bcbd22",
    "#8c564b",
)
UNKNOWN_COLOR = "#bab0ac"
#: One colour per continent for the trend lines (Unknown is grey).
CONTINENT_COLORS: dict[str, str] = {
    **dict(zip(CONTINENTS, PALETTE, strict=False)),
    UNKNOWN: UNKNOWN_COLOR,
}

Patches = dict[str, list[tuple[int, Any]]]


@dataclass(frozen=True)
class Snapshot:
    """Everything the feed knows at one moment; the input of every view function."""

    breakdown: Breakdown | None = None
    windows: Sequence[WindowCounts] = ()
    partitions: Mapping[int, PartitionProgress] = field(default_factory=dict)
    #: Kafka high watermark per offers partition; ``None`` when Kafka was not asked/answered.
    high_watermarks: Mapping[int, int] | None = None
    redis_ok: bool = False
    #: Why Redis is unreachable: one line, secrets masked (shown in the banner).
    redis_error: str | None = None
    #: ``None`` until the first Kafka check finished.
    kafka_ok: bool | None = None
    #: Why Kafka is unreachable: one line, secrets masked (shown beside Kafka's status).
    kafka_error: str | None = None
    #: Kafka answered and has no offers topic (the dashboard never creates it).
    offers_topic_missing: bool = False
    #: How many Kafka checks finished so far (on the page for the browser tests to wait on).
    kafka_checks: int = 0
    #: Rows of the offer-rows topic the PostgreSQL sink has not committed; ``None``: no rows
    #: topic configured, or not known.
    sink_lag: int | None = None
    records_per_s: float | None = None
    #: Wall-clock time (epoch s) the snapshot was taken.
    taken_at: float = 0.0


# -- the breakdown chart -----------------------------------------------------------------
def category_colors(categories: Iterable[str]) -> dict[str, str]:
    """A stable colour per category: by name order, so it does not change as counts move."""
    known = sorted(c for c in set(categories) if c != UNKNOWN)
    colors = {cat: PALETTE[i % len(PALETTE)] for i, cat in enumerate(known)}
    colors[UNKNOWN] = UNKNOWN_COLOR
    return colors


def stacked_bar_columns(counts: Mapping[str, Mapping[str, int]]) -> Columns:
    """One bar segment per non-empty (continent, category): stacked by category per continent.

    Segments of a continent stack bottom-up in table order (largest category first), so
    a single ``vbar`` with ``bottom``/``top`` draws the whole stacked chart.
    """
    categories = category_order(counts)
    colors = category_colors(categories)
    data: Columns = {k: [] for k in ("continent", "category", "bottom", "top", "n", "color")}
    for continent in continent_columns(counts):
        height = 0
        for category in categories:
            n = int(counts.get(category, {}).get(continent, 0))
            if n <= 0:
                continue
            data["continent"].append(continent)
            data["category"].append(category)
            data["bottom"].append(height)
            data["top"].append(height + n)
            data["n"].append(n)
            data["color"].append(colors[category])
            height += n
    return data


# -- trends ------------------------------------------------------------------------------
def trend_key(kind: str, continent: str) -> str:
    """Column name of one continent's opened/closed series in the trend source."""
    return f"{kind}:{continent}"


def trend_columns(windows: Sequence[WindowCounts], continents: Sequence[str]) -> Columns:
    """Offers opened and closed per window and continent (oldest window first).

    Keys: ``start`` (window start, epoch ms), ``opened:<continent>``, ``closed:<continent>``
    for each of ``continents``, and ``opened`` / ``closed`` totals.
    """
    data: Columns = {"start": [w.start_ms for w in windows]}
    for kind in ("opened", "closed"):
        per_window = [_per_continent(getattr(w, kind)) for w in windows]
        for continent in continents:
            data[trend_key(kind, continent)] = [row.get(continent, 0) for row in per_window]
        data[kind] = [sum(row.values()) for row in per_window]
    return data


def filling_window(windows: Sequence[WindowCounts], window_seconds: int, now: float) -> int | None:
    """Start (epoch ms) of the newest window when it is still open at ``now`` (epoch s).

    Its counts are still growing, so its point on a trend line is not a real drop.
    """
    if not windows:
        return None
    start_ms = windows[-1].start_ms
    return start_ms if now * 1000 < start_ms + window_seconds * 1000 else None


def _per_continent(cells: Mapping[Any, int]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for cell, n in cells.items():
        sums[cell.continent] = sums.get(cell.continent, 0) + int(n)
    return sums


# -- headline numbers and health ---------------------------------------------------------
@dataclass(frozen=True)
class Headline:
    """The big numbers at the top of the page."""

    open_offers: int | None
    window_start_ms: int | None
    opened_last_window: int | None
    closed_last_window: int | None
    records_per_s: float | None
    dlq: int | None
    records: int | None
    late: int | None
    unknown_deletes: int | None
    stale: int | None


#: The headline while Redis has never answered: nothing is known, which is not zero.
UNKNOWN_HEADLINE = Headline(None, None, None, None, None, None, None, None, None, None)


def redis_never_read(snapshot: Snapshot) -> bool:
    """Whether Redis has not been read once yet (every count is unknown, not zero)."""
    return snapshot.breakdown is None


def headline(snapshot: Snapshot) -> Headline:
    """Open offers, the newest window's opened/closed, throughput and DLQ count.

    All ``None`` until Redis was read once.
    """
    if redis_never_read(snapshot):
        return UNKNOWN_HEADLINE
    stats = totals(snapshot.partitions.values())
    last = snapshot.windows[-1] if snapshot.windows else None
    return Headline(
        open_offers=snapshot.breakdown.total if snapshot.breakdown else 0,
        window_start_ms=last.start_ms if last else None,
        opened_last_window=sum(last.opened.values()) if last else 0,
        closed_last_window=sum(last.closed.values()) if last else 0,
        records_per_s=snapshot.records_per_s,
        dlq=stats.dlq,
        records=stats.records,
        late=stats.late,
        unknown_deletes=stats.unknown_deletes,
        stale=stats.stale,
    )


def partition_columns(
    partitions: Mapping[int, PartitionProgress],
    high_watermarks: Mapping[int, int] | None,
    partition_count: int,
    *,
    known: bool = True,
) -> Columns:
    """Per offers-partition progress: processed offset, Kafka end offset, lag (None = unknown).

    The end offset shown is never below the processed offset (so the lag is never negative):
    the Kafka end offsets are polled less often than Redis is read. Lists every partition in
    ``range(partition_count)`` plus any other one seen in Redis or Kafka, so partitions that
    received nothing yet still show. ``known=False`` (Redis never read): everything but the
    Kafka end offset is ``None``.
    """
    ids = sorted(set(range(partition_count)) | set(partitions) | set(high_watermarks or {}))
    data: Columns = {k: [] for k in ("partition", "offset", "end", "lag", "records", "dlq")}
    if not known:
        for p in ids:
            data["partition"].append(p)
            data["end"].append(high_watermarks.get(p) if high_watermarks is not None else None)
            for key in ("offset", "lag", "records", "dlq"):
                data[key].append(None)
        return data
    for p in ids:
        progress = partitions.get(p, PartitionProgress())
        end = high_watermarks.get(p) if high_watermarks is not None else None
        if end is not None:
            # End offsets are polled every few seconds, the processed offset on every write:
            # between two polls the dataflow can be past the last end offset read.
            end = max(end, progress.offset)
        data["partition"].append(p)
        data["offset"].append(progress.offset)
        data["end"].append(end)
        data["lag"].append(max(end - progress.offset, 0) if end is not None else None)
        data["records"].append(progress.records)
        data["dlq"].append(progress.dlq)
    return data


def total_lag(columns: Columns) -> int | None:
    """Sum of the known lags; ``None`` when no lag is known."""
    known = [lag for lag in columns["lag"] if lag is not None]
    return sum(known) if known else None


def parse_updated_at(updated_at: str | None) -> float | None:
    """Epoch seconds of a ``Breakdown.updated_at`` RFC 3339 string (``None`` stays ``None``)."""
    if not updated_at:
        return None
    try:
        return datetime.fromisoformat(updated_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age_text(seconds: float | None) -> str:
    """``"never"``, ``"just now"``, ``"12 s ago"``, ``"3 min ago"``, ``"2 h ago"``."""
    if seconds is None:
        return "never"
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"


def format_window(start_ms: int | None) -> str:
    """``"10:42:00 UTC"`` for a window start, ``"–"`` when there is none.

    With seconds: windows are ``JOBPULSE_WINDOW_SECONDS`` long (60 by default, but any
    number of seconds), so a window may start at 10:42:30.
    """
    if start_ms is None:
        return "–"
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%H:%M:%S UTC")


def records_rate(samples: Sequence[tuple[float, int]]) -> float | None:
    """Records/s between the oldest and newest ``(time_s, total_records)`` sample.

    ``None`` with fewer than two samples or no time between them. A drop in the record
    count (the prefix was cleared) restarts the measurement from that sample.
    """
    start = 0
    for i in range(1, len(samples)):
        if samples[i][1] < samples[i - 1][1]:
            start = i
    usable = samples[start:]
    if len(usable) < 2:
        return None
    (t0, r0), (t1, r1) = usable[0], usable[-1]
    return (r1 - r0) / (t1 - t0) if t1 > t0 else None


# -- incremental updates -----------------------------------------------------------------
def column_patches(old: Mapping[str, Sequence[Any]], new: Mapping[str, Sequence[Any]]) -> Patches:
    """``ColumnDataSource.patch`` argument turning ``old`` into ``new`` (same keys and length).

    Raises ``ValueError`` when the shapes differ; then the caller replaces the data.
    """
    if not same_shape(old, new):
        raise ValueError("column sets or lengths differ; replace the data instead")
    patches: Patches = {}
    for key, new_values in new.items():
        changed = [
            (i, v) for i, (o, v) in enumerate(zip(old[key], new_values, strict=True)) if o != v
        ]
        if changed:
            patches[key] = changed
    return patches


def same_shape(old: Mapping[str, Sequence[Any]], new: Mapping[str, Sequence[Any]]) -> bool:
    """Same column names and the same length in every column."""
    if set(old) != set(new):
        return False
    lengths = {len(v) for v in old.values()} | {len(v) for v in new.values()}
    return len(lengths) <= 1
