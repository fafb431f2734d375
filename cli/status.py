"""``jobpulse status``: the whole pipeline in one answer, healthy or not (and why).

What it looks at, in order: the local stack (only when every service address is on this
machine), the topics (partitions, end offsets), the dataflow (who holds the run lease, the
processed offset and lag of every offers partition, the age of the last Redis write, the
DLQ/stale/late counters), the PostgreSQL sink's lag (when ``JOBPULSE_ROWS_TOPIC`` is set)
and the dashboard (``JOBPULSE_DASHBOARD_URL``; without it the local port is tried, for
information only).

Healthy means: Kafka and Redis answer (and PostgreSQL when the sink is configured), every
topic exists, the dataflow is no more than ``--max-lag`` records behind, it wrote to Redis
within ``--max-idle`` seconds whenever records wait (a running dataflow rewrites its view
every ``JOBPULSE_VIEW_REFRESH_SECONDS`` anyway), it is running whenever records wait, the
sink is no more than ``--max-lag`` rows behind and a configured dashboard answers
``/healthz``. Exit 0 then; otherwise exit 3 and one ``jobpulse: unhealthy: …`` line per
problem on stderr (one per service: Redis down is one line, not one per section). Usable as
a Kubernetes exec probe. Every address is shown with its credentials masked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer

from jobpulse.settings import Settings

#: Exit status of an unhealthy pipeline (as ``jobpulse stack status`` when a service is down).
EXIT_UNHEALTHY = 3
DEFAULT_MAX_LAG = 100_000
DEFAULT_MAX_IDLE_S = 60.0
#: How long the dashboard may take to answer ``/healthz``.
DASHBOARD_TIMEOUT_S = 2.0


@dataclass
class Report:
    """What ``status`` found: a JSON-able dict per section and the problems, one per
    service at most (the first one found for it wins)."""

    sections: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def problem(self, service: str, text: str) -> None:
        self.problems.setdefault(service, text)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "problems": list(self.problems.values()), **self.sections}


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    max_lag: Annotated[
        int, typer.Option(help="Unhealthy when the dataflow or the sink is further behind.", min=0)
    ] = DEFAULT_MAX_LAG,
    max_idle: Annotated[
        float,
        typer.Option(
            help="Unhealthy when records wait and Redis got no write for this long (s).", min=0
        ),
    ] = DEFAULT_MAX_IDLE_S,
) -> None:
    """The pipeline's health: stack, topics, dataflow, PostgreSQL sink, dashboard.

    Exit 0 when healthy, 3 with one line per problem otherwise (a Kubernetes probe can run it).
    """
    settings: Settings = ctx.obj
    report = collect(settings, max_lag=max_lag, max_idle_s=max_idle)
    if as_json:
        typer.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in text_lines(report):
            typer.echo(line)
    for problem in report.problems.values():
        typer.secho(f"jobpulse: unhealthy: {problem}", err=True, fg="red")
    if not report.healthy:
        raise typer.Exit(code=EXIT_UNHEALTHY)


def collect(settings: Settings, *, max_lag: int, max_idle_s: float) -> Report:
    """Look at every part of the pipeline (see the module doc)."""
    report = Report()
    _stack(settings, report)
    # Redis before Kafka: the end offsets are read after the processed ones, so a partition
    # is never shown processed past its end (the lag may only be over by what just arrived).
    redis_state = _read_redis(settings, report)
    ends = _topics(settings, report)
    _dataflow(settings, report, redis_state, ends, max_lag=max_lag, max_idle_s=max_idle_s)
    _sink(settings, report, max_lag=max_lag)
    _dashboard(settings, report)
    return report


# -- the sections ---------------------------------------------------------------------------


def _stack(settings: Settings, report: Report) -> None:
    """The local services (``jobpulse stack status``), when they are all local."""
    from jobpulse import processes
    from jobpulse.stack import lifecycle

    hosts = [settings.kafka_host, settings.redis_host, _postgres_host(settings)]
    if not all(processes.is_local_host(h.strip("[]")) for h in hosts):
        report.sections["stack"] = {"local": False}
        return
    services = []
    for state in lifecycle.status(settings):
        services.append(
            {
                "name": state.name,
                "state": state.state,
                "up": state.up,
                "address": state.address,
                "version": state.version,
                "pid": state.pid,
            }
        )
        needed = state.name != "postgres" or settings.rows_topic is not None
        if needed and not state.up:
            report.problem(
                state.name,
                state.problem
                or f"{state.name} is {state.state} at {state.address} "
                "(start it with `jobpulse stack up`)",
            )
    report.sections["stack"] = {"local": True, "services": services}


def _postgres_host(settings: Settings) -> str:
    from urllib.parse import urlsplit

    return urlsplit(settings.postgres_url).hostname or "localhost"


def _topics(settings: Settings, report: Report) -> dict[str, dict[int, int]]:
    """Partitions and end offsets of every project topic; returns topic → end offsets."""
    from jobpulse import topics
    from jobpulse.errors import JobpulseError

    roles = {
        settings.offers_topic: "offers",
        settings.deltas_topic: "deltas",
        settings.dlq_topic: "dlq",
        **({settings.rows_topic: "rows"} if settings.rows_topic else {}),
    }
    try:
        topics.cluster_metadata(settings, timeout=5)
    except JobpulseError as exc:
        report.problem("kafka", str(exc))
        report.sections["topics"] = None
        return {}
    section: dict[str, Any] = {}
    ends: dict[str, dict[int, int]] = {}
    for name, role in roles.items():
        end = topics.end_offsets(settings, name)
        if end is None:
            section[name] = {"role": role, "exists": False}
            report.problem(
                f"topic {name}",
                f"the {role} topic {name} does not exist at {settings.kafka_display}: create it "
                "with `jobpulse topics create`",
            )
            continue
        ends[name] = end
        section[name] = {
            "role": role,
            "exists": True,
            "partitions": len(end),
            "end_offsets": {str(p): o for p, o in sorted(end.items())},
            "records": sum(end.values()),
        }
    report.sections["topics"] = section
    return ends


@dataclass(frozen=True)
class _RedisState:
    """What the dataflow keeps in Redis: the lease holder, the partitions' progress, the
    breakdown's metadata."""

    holder: dict[str, object] | None
    progress: dict[int, Any]
    meta: Any


def _read_redis(settings: Settings, report: Report) -> _RedisState | None:
    """The dataflow's state in Redis, or ``None`` (and a problem) if Redis does not answer."""
    import redis

    from jobpulse.dataflows.exclusive import lease_holder
    from jobpulse.errors import ServiceUnavailable
    from jobpulse.store import Store, redis_unavailable

    try:
        store = Store.connect(settings)
        try:
            return _RedisState(lease_holder(store), store.partitions(), store.breakdown())
        finally:
            store.client.close()
    except (ServiceUnavailable, redis.RedisError) as exc:
        error = exc if isinstance(exc, ServiceUnavailable) else redis_unavailable(settings, exc)
        report.problem("redis", str(error))
        return None


def _dataflow(
    settings: Settings,
    report: Report,
    state: _RedisState | None,
    ends: dict[str, dict[int, int]],
    *,
    max_lag: int,
    max_idle_s: float,
) -> None:
    """The run lease, per-partition progress and lag, last write, counters (from Redis)."""
    from jobpulse.store import PartitionProgress, totals

    if state is None:
        report.sections["dataflow"] = None
        return
    holder, progress, meta = state.holder, state.progress, state.meta
    end = ends.get(settings.offers_topic)
    none = PartitionProgress()
    partitions: dict[str, Any] = {}
    for partition in sorted(set(progress) | set(end or {})):
        done = progress.get(partition, none)
        high = end.get(partition) if end is not None else None
        partitions[str(partition)] = {
            "offset": done.offset,
            "end": high,
            "lag": None if high is None else max(0, high - done.offset),
            "records": done.records,
            "dlq": done.dlq,
            "stale": done.stale,
            "late": done.late,
            "unknown_deletes": done.unknown_deletes,
        }
    lag = None if end is None else sum(p["lag"] or 0 for p in partitions.values())
    age = _age_s(meta.updated_at)
    total = totals(progress.values())
    report.sections["dataflow"] = {
        "running": holder is not None,
        "lease": holder,
        "redis_prefix": settings.redis_prefix,
        "lag": lag,
        "records": total.records,
        "dlq": total.dlq,
        "stale": total.stale,
        "late": total.late,
        "unknown_deletes": total.unknown_deletes,
        "open_offers": meta.total,
        "last_write": meta.updated_at,
        "last_write_age_s": None if age is None else round(age, 1),
        "version": meta.version,
        "partitions": partitions,
    }
    if not lag:
        return
    if holder is None:
        report.problem(
            "dataflow",
            f"the dataflow is not running (no run holds Redis prefix {settings.redis_prefix!r}) "
            f"and {lag} offers records wait: start `jobpulse run`",
        )
    elif lag > max_lag:
        report.problem(
            "dataflow", f"the dataflow is {lag} records behind (over --max-lag {max_lag})"
        )
    elif age is not None and age > max_idle_s:
        report.problem(
            "dataflow",
            f"no Redis write for {age:.0f} s while {lag} offers records wait "
            f"(over --max-idle {max_idle_s:g} s)",
        )


def _age_s(timestamp: str | None) -> float | None:
    """Seconds since an RFC 3339 time (``None`` stays ``None``)."""
    if not timestamp:
        return None
    try:
        return max(0.0, time.time() - datetime.fromisoformat(timestamp).timestamp())
    except ValueError:
        return None


def _sink(settings: Settings, report: Report, *, max_lag: int) -> None:
    """The PostgreSQL sink's consumer-group lag on the rows topic (when one is configured)."""
    if not settings.rows_topic:
        report.sections["sink"] = None
        return
    from jobpulse import topics
    from jobpulse.offer_row import sink_group

    group = sink_group(settings.rows_topic)
    lag = (
        topics.group_lag(settings, group, settings.rows_topic)
        if "kafka" not in report.problems
        else None
    )
    report.sections["sink"] = {"rows_topic": settings.rows_topic, "group": group, "lag": lag}
    if lag is None:
        report.problem("sink", f"the PostgreSQL sink's lag on {settings.rows_topic} is unknown")
    elif lag > max_lag:
        report.problem(
            "sink", f"the PostgreSQL sink is {lag} rows behind (over --max-lag {max_lag})"
        )


def _dashboard(settings: Settings, report: Report) -> None:
    """``GET /healthz`` of the dashboard: a problem only when JOBPULSE_DASHBOARD_URL is set."""
    from jobpulse.settings import mask_url

    configured = settings.dashboard_url is not None
    if settings.dashboard_url is not None:
        url = settings.dashboard_url
    else:
        host = settings.dashboard_host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        url = f"http://{host}:{settings.dashboard_port}/"
    reachable, detail = _healthz(url)
    shown = mask_url(url)
    report.sections["dashboard"] = {
        "url": shown,
        "configured": configured,
        "reachable": reachable,
        **({"error": detail} if detail else {}),
    }
    if configured and not reachable:
        report.problem("dashboard", f"the dashboard at {shown} does not answer /healthz ({detail})")


def _healthz(url: str) -> tuple[bool, str | None]:
    """Whether ``<url>/healthz`` answers 200, and why not."""
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=DASHBOARD_TIMEOUT_S) as answer:
            return answer.status == 200, None if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(getattr(reason, "strerror", None) or reason)


# -- the text form ---------------------------------------------------------------------------


def text_lines(report: Report) -> list[str]:
    """The report for a terminal: a verdict, then one block per section."""
    s = report.sections
    lines = ["healthy" if report.healthy else f"UNHEALTHY: {len(report.problems)} problem(s)"]
    stack = s.get("stack") or {}
    if stack.get("local"):
        for svc in stack["services"]:
            pid = f"  pid {svc['pid']}" if svc["pid"] else ""
            lines.append(
                f"stack      {svc['name']:<9}{svc['state']:<16}{svc['version'] or '-':<9}"
                f"{svc['address']}{pid}"
            )
    else:
        lines.append("stack      not local (not checked)")
    if s.get("topics") is None:
        lines.append("topics     unknown (Kafka does not answer)")
    else:
        for name, topic in s["topics"].items():
            if not topic["exists"]:
                lines.append(f"topics     {name:<32} MISSING")
            else:
                lines.append(
                    f"topics     {name:<32} {topic['partitions']:>3} partitions  "
                    f"{topic['records']:>12,} records"
                )
    lines += _dataflow_lines(s.get("dataflow"))
    sink = s.get("sink")
    if sink is not None:
        lag = "unknown" if sink["lag"] is None else f"{sink['lag']:,}"
        lines.append(f"sink       {sink['rows_topic']} (group {sink['group']}): lag {lag}")
    else:
        lines.append("sink       not configured (JOBPULSE_ROWS_TOPIC unset)")
    dash = s["dashboard"]
    state = "answers" if dash["reachable"] else f"does not answer ({dash.get('error')})"
    note = "" if dash["configured"] else " — JOBPULSE_DASHBOARD_URL unset, informational"
    lines.append(f"dashboard  {dash['url']} {state}{note}")
    return lines


def _dataflow_lines(flow: dict[str, Any] | None) -> list[str]:
    if flow is None:
        return ["dataflow   unknown (Redis does not answer)"]
    lease = flow["lease"]
    if lease:
        who = f"running: pid {lease.get('pid')} on {lease.get('host')} since {lease.get('since')}"
    else:
        who = "not running (no run lease)"
    lag = "unknown" if flow["lag"] is None else f"{flow['lag']:,}"
    age = flow["last_write_age_s"]
    wrote = "never" if age is None else f"{age:.1f} s ago"
    lines = [
        f"dataflow   {who}",
        f"           {flow['records']:,} records processed, lag {lag}, last Redis write {wrote}, "
        f"{flow['open_offers']:,} open offers",
        f"           dlq {flow['dlq']:,}, stale {flow['stale']:,}, late {flow['late']:,}, "
        f"unknown deletes {flow['unknown_deletes']:,}",
        "           partition     offset        end      lag",
    ]
    for partition, p in flow["partitions"].items():
        end = "?" if p["end"] is None else f"{p['end']:,}"
        lag_p = "?" if p["lag"] is None else f"{p['lag']:,}"
        lines.append(f"           {partition:>9} {p['offset']:>10,} {end:>10} {lag_p:>8}")
    return lines
