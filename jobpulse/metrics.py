"""Prometheus metrics: every metric name jobpulse exports, and the ``/metrics`` endpoint.

The one place that names a metric. The long-running processes — the dataflow (each process
of a cluster), the PostgreSQL sink and the dashboard — update these objects and, when
``JOBPULSE_METRICS_PORT`` is set, serve them with :func:`serve` (process *i* of a local
cluster or of a forked dashboard on port + *i*). Names follow Prometheus' conventions:
``jobpulse_<component>_…``, counters end in ``_total``, durations are histograms in seconds.

Cost: the objects are process-global and thread-safe (Bytewax workers are threads of one
process), and every caller updates them once per batch, never per record. The counters the
dataflow keeps in its state (records, DLQ, stale, late …: absolute since the first start,
the same numbers as Redis' ``<p>:partitions``) are mirrored by :class:`PartitionStats`, a
collector that reports the values last written, so a restart does not start them from 0.

The Grafana board ``k8s/grafana/jobpulse.json`` uses these names; a test checks that every
metric it queries is one of :func:`exported_names`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobpulse.errors import UsageError
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress

log = logging.getLogger("jobpulse.metrics")

# No ``…_created`` series beside every counter and histogram: a timestamp per series that
# doubles what a scrape carries, and that no panel or alert of jobpulse uses.
disable_created_metrics()

#: Histogram buckets for work of a batch (a Redis write is ~1 ms, a geocoded batch ~10 ms).
BATCH_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# -- every process -------------------------------------------------------------------------

BUILD_INFO = Gauge(
    "jobpulse_build_info", "Always 1: which jobpulse component this process runs.", ["component"]
)
OUTAGES = Counter(
    "jobpulse_outages_total",
    "Outages of a service a sink waited out (or is waiting out).",
    ["service"],
)
OUTAGE_WAIT_SECONDS = Counter(
    "jobpulse_outage_wait_seconds_total",
    "Seconds a sink spent waiting for a service to come back.",
    ["service"],
)
OUTAGE_ACTIVE = Gauge(
    "jobpulse_outage_active", "1 while a sink waits for this service, else 0.", ["service"]
)
KAFKA_READ_ERRORS = Counter(
    "jobpulse_kafka_read_errors_total",
    "Errors a topic's readers got from librdkafka (retried: a broker restart …).",
    ["reader"],
)

# -- the dataflow --------------------------------------------------------------------------

RECORDS_READ = Counter(
    "jobpulse_dataflow_records_read_total",
    "Offers records this process read, per offers partition (since the process started).",
    ["partition"],
)
LAG = Gauge(
    "jobpulse_dataflow_lag_records",
    "Offers records not read yet per partition: high watermark − next offset, as of the "
    "partition's last fetch (only partitions this process reads).",
    ["partition"],
)
OPEN_OFFERS = Gauge(
    "jobpulse_dataflow_open_offers",
    "Open offers per cell, as last written to Redis by this process (each cell is written "
    "by one worker of the cluster: sum over the processes).",
    ["category", "continent"],
)
MESSAGES_WRITTEN = Counter(
    "jobpulse_dataflow_messages_written_total",
    "Messages delivered to Kafka: output deltas (topic2), dlq or rows.",
    ["output"],
)
KAFKA_WRITE_SECONDS = Histogram(
    "jobpulse_dataflow_kafka_write_seconds",
    "Time to write one batch to a topic and have it acknowledged, per output.",
    ["output"],
    buckets=BATCH_BUCKETS,
)
REDIS_WRITE_SECONDS = Histogram(
    "jobpulse_dataflow_redis_write_seconds",
    "Time of one Redis write (one MULTI/EXEC of a batch), outage waits excluded.",
    buckets=BATCH_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "jobpulse_dataflow_batch_seconds",
    "Time one step took for one batch (parse, enrich, open_offers, delta_messages).",
    ["step"],
    buckets=BATCH_BUCKETS,
)
SNAPSHOT_SECONDS = Histogram(
    "jobpulse_dataflow_snapshot_seconds",
    "Time to serialise one state shard for a snapshot (the Python side; Bytewax then "
    "writes it to the recovery store).",
    buckets=BATCH_BUCKETS,
)

# -- the PostgreSQL sink -------------------------------------------------------------------

SINK_ROWS = Counter(
    "jobpulse_sink_rows_written_total",
    "Offer rows applied to PostgreSQL by outcome: upsert, delete or ignored (stale/replayed).",
    ["outcome"],
)
SINK_SKIPPED = Counter(
    "jobpulse_sink_records_skipped_total", "Records of the rows topic that are not offer rows."
)
SINK_LAG = Gauge(
    "jobpulse_sink_lag_records", "Rows of the rows topic the sink has not committed yet."
)
SINK_WRITE_SECONDS = Histogram(
    "jobpulse_sink_write_seconds",
    "Time of one batch's PostgreSQL transaction.",
    buckets=BATCH_BUCKETS,
)

# -- the dashboard -------------------------------------------------------------------------

DASHBOARD_SESSIONS = Gauge("jobpulse_dashboard_sessions", "Browser sessions open now.")
DASHBOARD_SESSIONS_OPENED = Counter(
    "jobpulse_dashboard_sessions_opened_total", "Browser sessions opened."
)
API_SECONDS = Histogram(
    "jobpulse_dashboard_api_request_seconds",
    "Latency of GET /api/breakdown, by HTTP status code.",
    ["code"],
    buckets=BATCH_BUCKETS,
)


class PartitionStats(Collector):
    """The dataflow's per-partition counters as this process last wrote them to Redis.

    They are absolute values kept in the dataflow's state (they survive restarts), so they
    are reported as they are rather than counted up from 0 by this process. Each partition's
    stats are written by exactly one worker of the cluster, so summing over the processes
    gives the totals.
    """

    #: (metric name without ``_total``, field of PartitionProgress, help).
    COUNTERS = (
        ("jobpulse_dataflow_records_processed", "records", "Offers records processed."),
        ("jobpulse_dataflow_dlq_records", "dlq", "Offers records sent to the dead-letter topic."),
        (
            "jobpulse_dataflow_stale_records",
            "stale",
            "Records older than the offer's last applied one (ignored).",
        ),
        (
            "jobpulse_dataflow_late_deltas",
            "late",
            "Deltas for a window no longer kept (counted, not windowed).",
        ),
        (
            "jobpulse_dataflow_unknown_deletes",
            "unknown_deletes",
            "Deletes of offers that were not open.",
        ),
    )
    OFFSET = "jobpulse_dataflow_processed_offset"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[int, PartitionProgress] = {}

    def update(self, partitions: Mapping[int, PartitionProgress]) -> None:
        """Note the absolute values of a Redis write (once per batch)."""
        with self._lock:
            self._latest.update(partitions)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            latest = sorted(self._latest.items())
        for name, field, text in self.COUNTERS:
            family = CounterMetricFamily(name, text, labels=["partition"])
            for partition, progress in latest:
                family.add_metric([str(partition)], getattr(progress, field))
            yield family
        offset = GaugeMetricFamily(
            self.OFFSET, "Next offers offset to process, per partition.", labels=["partition"]
        )
        for partition, progress in latest:
            offset.add_metric([str(partition)], progress.offset)
        yield offset

    def describe(self) -> Iterator[Metric]:
        for name, _, text in self.COUNTERS:
            yield CounterMetricFamily(name, text, labels=["partition"])
        yield GaugeMetricFamily(self.OFFSET, "Next offers offset to process.", labels=["partition"])


PARTITIONS = PartitionStats()
REGISTRY.register(PARTITIONS)


def exported_names() -> set[str]:
    """Every sample name jobpulse's own metrics can expose (``…_total``, ``…_bucket`` …)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for metric in (
        *(m for m in globals().values() if isinstance(m, Counter | Gauge | Histogram)),
        PARTITIONS,
    ):
        for family in metric.describe():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


#: The port this process serves ``/metrics`` on, once :func:`serve` started it.
_SERVING: list[int] = []


def serve(settings: Settings, component: str, *, offset: int = 0) -> int | None:
    """Serve ``/metrics`` on ``JOBPULSE_METRICS_HOST``:``JOBPULSE_METRICS_PORT`` + ``offset``
    in a daemon thread; return the port (``None``: no port set, nothing served).

    Port 0 takes any free port. A port in use is one :class:`UsageError` line.
    """
    from prometheus_client import start_http_server

    if settings.metrics_port is None:
        return None
    if _SERVING:  # a run that restarts itself (the offers topic grew) serves on
        return _SERVING[0]
    host = settings.metrics_host
    port = settings.metrics_port + offset if settings.metrics_port else 0
    try:
        server, _thread = start_http_server(port, host)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another "
            "JOBPULSE_METRICS_PORT"
        ) from None
    BUILD_INFO.labels(component).set(1)
    port = int(server.server_port)
    _SERVING.append(port)
    log.info("metrics at http://%s:%d/metrics", host, port)
    return port
