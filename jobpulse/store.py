"""The Redis key layout and the only code that reads or writes jobpulse's Redis keys.

Every key starts with ``<prefix>:`` (``JOBPULSE_REDIS_PREFIX``, default ``jobpulse``).
A *cell field* is the JSON array ``["<category>","<continent>"]`` (unambiguous whatever
the names contain).

==============================  =======  ==================================================
key                             type     content
==============================  =======  ==================================================
``<p>:breakdown``               hash     cell field → open offers (absolute; 0 = absent)
``<p>:windows``                 zset     window start (epoch ms) → same as score
``<p>:window:<start>:opened``   hash     cell field → offers opened in that window
``<p>:window:<start>:closed``   hash     cell field → offers closed in that window
``<p>:partitions``              hash     offers partition → JSON :class:`PartitionProgress`
``<p>:meta``                    hash     ``version`` (bumped per write), ``updated_at``
``<p>:updates``                 channel  JSON ``{"version", "updated_at"}`` after each write
``<p>:lease``                   string   the running dataflow's JSON owner (expires; renewed)
==============================  =======  ==================================================

All counts are written as absolute values computed by the dataflow's state (never
INCR/HINCRBY), so replaying input after a crash rewrites the same numbers instead of
double counting. Window hashes expire after :data:`WINDOW_RETENTION_S`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis

from jobpulse.delta import Cell
from jobpulse.errors import AuthenticationFailed, ServiceUnavailable
from jobpulse.offer import format_rfc3339
from jobpulse.settings import Settings

#: How long window hashes are kept in Redis.
WINDOW_RETENTION_S = 24 * 3600
#: Seconds to wait for Redis to accept a connection.
CONNECT_TIMEOUT_S = 3.0
#: Seconds to wait for any reply: a hung Redis fails a call instead of hanging its caller.
#: Explicit, not left to redis-py (older versions default to no timeout). Blocking pub/sub
#: reads (``listen()``, ``get_message(timeout=None)``) are not limited by it.
SOCKET_TIMEOUT_S = 5.0
#: A pooled connection idle this many seconds is PINGed before reuse (drops dead sockets).
HEALTH_CHECK_INTERVAL_S = 30


class Keys:
    """Key names under one prefix. The single place that spells a jobpulse Redis key."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.breakdown = f"{prefix}:breakdown"
        self.windows = f"{prefix}:windows"
        self.partitions = f"{prefix}:partitions"
        self.meta = f"{prefix}:meta"
        self.updates = f"{prefix}:updates"
        self.lease = f"{prefix}:lease"

    def window_opened(self, start_ms: int) -> str:
        return f"{self.prefix}:window:{start_ms}:opened"

    def window_closed(self, start_ms: int) -> str:
        return f"{self.prefix}:window:{start_ms}:closed"

    @property
    def pattern(self) -> str:
        """Glob matching every key of this prefix."""
        return f"{self.prefix}:*"


def cell_field(cell: Cell) -> bytes:
    return orjson.dumps([cell.category, cell.continent])


def parse_cell_field(raw: bytes | str) -> Cell:
    category, continent = orjson.loads(raw)
    return Cell(category, continent)


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """Per offers-partition pipeline stats, absolute since the dataflow first started."""

    #: Next offset to read (last processed + 1).
    offset: int = 0
    records: int = 0
    dlq: int = 0
    #: ``delete`` records for offers that were not open.
    unknown_deletes: int = 0
    #: Records whose event time fell in a window already past the watermark.
    late: int = 0
    #: Records older than the offer's last applied record from another partition (ignored).
    stale: int = 0

    def plus(self, more: PartitionProgress) -> PartitionProgress:
        """These counters plus the increments in ``more`` (``offset``: the further one)."""
        return PartitionProgress(
            offset=max(self.offset, more.offset),
            records=self.records + more.records,
            dlq=self.dlq + more.dlq,
            unknown_deletes=self.unknown_deletes + more.unknown_deletes,
            late=self.late + more.late,
            stale=self.stale + more.stale,
        )


@dataclass(frozen=True)
class WindowCounts:
    """Offers opened and closed per cell in one tumbling window."""

    start_ms: int
    opened: dict[Cell, int] = field(default_factory=dict)
    closed: dict[Cell, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Breakdown:
    """Open offers per category × continent, as last written by the dataflow."""

    counts: dict[str, dict[str, int]]
    updated_at: str | None = None
    version: int = 0

    @property
    def total(self) -> int:
        return sum(n for row in self.counts.values() for n in row.values())

    def to_json_dict(self) -> dict[str, Any]:
        """The shape of ``jobpulse breakdown --json`` and ``GET /api/breakdown``."""
        return {"counts": self.counts, "total": self.total, "updated_at": self.updated_at}


def redis_client(
    settings: Settings,
    *,
    socket_timeout: float | None = SOCKET_TIMEOUT_S,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> redis.Redis:
    """A client for ``settings.redis_url`` that never waits forever: connect and reply
    timeouts (``socket_timeout=None``: replies are not bounded), TCP keepalive and a health
    check of idle pooled connections."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def is_auth_error(exc: BaseException) -> bool:
    """Whether a Redis error means "wrong or missing credentials" (not "unreachable")."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS"))


def redis_unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """The one-line error for a Redis call that failed with ``exc``: authentication refused
    (:class:`AuthenticationFailed`) or not reachable. Never shows a password."""
    shown, address, user = settings.redis_display, settings.redis_address, settings.redis_username
    detail = settings.scrub(" ".join(str(exc).split()) or type(exc).__name__)
    if not is_auth_error(exc):
        return ServiceUnavailable(
            f"Redis is not reachable at {shown} ({detail}); "
            "start it with `jobpulse stack up` or set JOBPULSE_REDIS_URL"
        )
    if not settings.redis_password_given:
        return AuthenticationFailed(
            f"Redis authentication failed for user {user!r} at {address}: the server requires "
            f"a password and JOBPULSE_REDIS_URL ({shown}) gives none; "
            "set it as redis://user:password@host:port/db"
        )
    return AuthenticationFailed(
        f"Redis authentication failed for user {user!r} at {address} ({detail}): "
        f"check the user and password in JOBPULSE_REDIS_URL ({shown})"
    )


class Store:
    """Reads and writes one prefix's keys on a Redis connection."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        check: bool = True,
        socket_timeout: float | None = SOCKET_TIMEOUT_S,
    ) -> Store:
        """A store on ``settings.redis_url`` (client from :func:`redis_client`).

        With ``check``, PING first: :class:`AuthenticationFailed` if Redis refuses the URL's
        credentials, :class:`ServiceUnavailable` if it cannot be reached. ``socket_timeout``
        bounds every reply (``None``: no bound). :meth:`pubsub` works either way: redis-py
        reads a blocking ``listen()`` / ``get_message(timeout=None)`` without the socket
        timeout, and ``get_message(timeout=t)`` waits ``t``.
        """
        client = redis_client(settings, socket_timeout=socket_timeout)
        if check:
            try:
                client.ping()
            except redis.RedisError as exc:
                client.close()
                raise redis_unavailable(settings, exc) from None
        return cls(client, settings.redis_prefix)

    # -- writing (the dataflow) ----------------------------------------------------------
    def write(
        self,
        *,
        cells: Mapping[Cell, int] | None = None,
        windows: Mapping[int, WindowCounts] | None = None,
        partitions: Mapping[int, PartitionProgress] | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Write absolute values in one transaction, bump the version, notify; return it."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=True)
        if cells:
            present = {cell_field(c): n for c, n in cells.items() if n != 0}
            absent = [cell_field(c) for c, n in cells.items() if n == 0]
            if present:
                pipe.hset(keys.breakdown, mapping=present)
            if absent:
                pipe.hdel(keys.breakdown, *absent)
        for start_ms, window in (windows or {}).items():
            for key, counts in (
                (keys.window_opened(start_ms), window.opened),
                (keys.window_closed(start_ms), window.closed),
            ):
                if counts:
                    pipe.hset(key, mapping={cell_field(c): n for c, n in counts.items()})
                    pipe.expire(key, WINDOW_RETENTION_S)
            pipe.zadd(keys.windows, {str(start_ms): start_ms})
        if windows:
            oldest_kept = max(windows) - WINDOW_RETENTION_S * 1000
            pipe.zremrangebyscore(keys.windows, "-inf", f"({oldest_kept}")
        if partitions:
            pipe.hset(
                keys.partitions,
                mapping={str(p): orjson.dumps(asdict(pr)) for p, pr in partitions.items()},
            )
        updated_at = format_rfc3339(now_ms if now_ms is not None else int(time.time() * 1000))
        pipe.hincrby(keys.meta, "version", 1)
        pipe.hset(keys.meta, "updated_at", updated_at)
        results = pipe.execute()
        version = int(results[-2])
        self.client.publish(
            keys.updates, orjson.dumps({"version": version, "updated_at": updated_at})
        )
        return version

    # -- reading (CLI, dashboard, verify) -----------------------------------------------------
    def cells(self) -> dict[Cell, int]:
        return {
            parse_cell_field(f): int(n) for f, n in self.client.hgetall(self.keys.breakdown).items()
        }

    def breakdown(self) -> Breakdown:
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.breakdown)
        pipe.hmget(self.keys.meta, ["updated_at", "version"])
        raw_cells, (updated_at, version) = pipe.execute()
        counts: dict[str, dict[str, int]] = {}
        for raw_field, raw_n in raw_cells.items():
            n = int(raw_n)
            if n:
                cell = parse_cell_field(raw_field)
                counts.setdefault(cell.category, {})[cell.continent] = n
        return Breakdown(
            counts=counts,
            updated_at=updated_at.decode() if updated_at else None,
            version=int(version or 0),
        )

    def windows(self, last: int = 60) -> list[WindowCounts]:
        """The ``last`` most recent windows, oldest first."""
        starts = [int(s) for s in self.client.zrange(self.keys.windows, -last, -1)]
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self.keys.window_opened(start))
            pipe.hgetall(self.keys.window_closed(start))
        raw = pipe.execute()
        return [
            WindowCounts(start, _cell_counts(raw[2 * i]), _cell_counts(raw[2 * i + 1]))
            for i, start in enumerate(starts)
        ]

    def partitions(self) -> dict[int, PartitionProgress]:
        raw = self.client.hgetall(self.keys.partitions)
        return {
            int(p): PartitionProgress(**orjson.loads(v))
            for p, v in sorted(raw.items(), key=lambda kv: int(kv[0]))
        }

    def pubsub(self) -> redis.client.PubSub:
        """A pub/sub connection subscribed to the update notifications."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.updates)
        return pubsub

    # -- the run lease (one dataflow run per prefix) --------------------------------------
    def acquire_lease(self, owner: str, ttl_ms: int) -> str | None:
        """Take the lease for ``ttl_ms`` if nobody holds it; else return the holder's value."""
        if self.client.set(self.keys.lease, owner, nx=True, px=ttl_ms):
            return None
        holder = self.client.get(self.keys.lease)
        if holder is None:  # expired in between
            return self.acquire_lease(owner, ttl_ms)
        return holder.decode()

    def renew_lease(self, owner: str, ttl_ms: int, *, replacing: str | None = None) -> bool:
        """Extend the lease held by ``owner`` (or take it if free, or if it is exactly
        ``replacing``, a dead holder's value); ``False`` if someone else holds it."""
        return bool(
            self.client.eval(
                _RENEW_LEASE, 1, self.keys.lease, owner, str(ttl_ms), replacing or owner
            )
        )

    def release_lease(self, owner: str) -> None:
        """Drop the lease if ``owner`` still holds it."""
        self.client.eval(_RELEASE_LEASE, 1, self.keys.lease, owner)

    def clear(self) -> int:
        """Delete every key of this prefix; return how many."""
        doomed = list(self.client.scan_iter(match=self.keys.pattern, count=1000))
        return self.client.delete(*doomed) if doomed else 0


_RENEW_LEASE = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] or held == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _cell_counts(raw: Mapping[bytes, bytes]) -> dict[Cell, int]:
    return {parse_cell_field(f): int(n) for f, n in raw.items()}


def totals(progress: Iterable[PartitionProgress]) -> PartitionProgress:
    """The sum over partitions (``offset`` is the total records consumed)."""
    items = list(progress)
    return PartitionProgress(
        offset=sum(p.offset for p in items),
        records=sum(p.records for p in items),
        dlq=sum(p.dlq for p in items),
        unknown_deletes=sum(p.unknown_deletes for p in items),
        late=sum(p.late for p in items),
        stale=sum(p.stale for p in items),
    )
