"""Operating jobpulse: progress, ``jobpulse status``, Prometheus metrics, quiet structured logs.

Against the real Kafka, Redis and PostgreSQL: a live run scraped while offers flow, whose
counters must equal what was produced, what Redis holds and what ``breakdown`` shows, its lag
0 once caught up; ``status --json`` against Redis and Kafka, and with Redis stopped (a
private ``redis-server``, never the shared one); the progress display under a
pseudo-terminal and as plain (JSON) log lines; the sink's and the dashboard's metrics. The
once-per-state-change logging is tested at the unit level here (a real broker restart is
``tests/test_faults.py::test_a_broker_restart_is_waited_out_quietly``, which stops the
shared broker); the Grafana board is checked against the names the code exports.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import REPO, CliRunner, PrivateRedis, free_port, one_error_line, spawn_cli
from prometheus_client.parser import text_string_to_metric_families
from test_scaling import Feed, Producing, stop, wait_for_records

from jobpulse import logs, metrics, topics
from jobpulse.kafka import ReadHealth
from jobpulse.outage import Outage
from jobpulse.progress import ProgressDisplay, Sample
from jobpulse.settings import Settings, child_env
from jobpulse.store import Store, totals
from jobpulse.topic_reader import read_to_end

GRAFANA = REPO / "k8s" / "grafana" / "jobpulse.json"

#: ``{metric sample name: [(labels, value)]}`` of one scrape.
Scrape = dict[str, list[tuple[dict[str, str], float]]]


# -- helpers ---------------------------------------------------------------------------------


def scrape(port: int) -> Scrape:
    """``GET /metrics`` on ``port``, parsed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: Scrape = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: Scrape, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for have, value in samples.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    )


def by_label(samples: Scrape, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = defaultdict(float)
    for have, value in samples.get(name, []):
        found[have[label]] += value
    return dict(found)


def wait_for_scrape(
    port: int, ready: Callable[[Scrape], bool], process: subprocess.Popen[Any], timeout: float = 60
) -> Scrape:
    """Scrape until ``ready`` (the process must keep running)."""
    deadline = time.monotonic() + timeout
    last: Scrape = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process exited with {process.returncode}"
        try:
            last = scrape(port)
        except OSError:
            last = {}
        if ready(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"metrics not ready within {timeout} s: {dict(last)}")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stderr line as JSON (the test fails on a line that is not)."""
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text[-2000:]}") from None
    return parsed


PROGRESS = re.compile(
    r"^(?P<label>run|sink): (?P<done>[\d,]+) (?:records|rows)(?: \([^)]*\))?, [\d,]+ "
    r"(?:records|rows)/s, lag (?P<lag>[\d,]+|unknown), (?P<eta>caught up|ETA \S+)$"
)


def progress_lines(lines: list[dict[str, Any]], label: str) -> list[re.Match[str]]:
    found = [
        PROGRESS.match(line["message"]) for line in lines if line["logger"] == "jobpulse.progress"
    ]
    return [m for m in found if m is not None and m["label"] == label]


def number(text: str) -> int:
    return int(text.replace(",", ""))


# -- a live run, scraped -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.partitions(3)
def test_a_live_run_scraped_while_offers_flow_then_status_with_redis_up_and_down(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    redis_server = PrivateRedis(tmp_path / "redis")
    redis_server.start()
    try:
        settings = settings.with_overrides(redis_url=redis_server.url)
        port = free_port()
        env = {"JOBPULSE_METRICS_PORT": str(port), "JOBPULSE_PROGRESS_SECONDS": "1"}
        feed = Feed(settings, seed=31)
        log_path = tmp_path / "run.log"
        bad = 7
        with open(log_path, "w") as log:
            live = spawn_cli(
                settings,
                "run",
                "--snapshot-interval",
                "1",
                "--log-format",
                "json",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                producing = Producing(feed, rate=300, ids=250)
                producing.start()
                first = wait_for_scrape(
                    port, lambda m: total(m, "jobpulse_dataflow_records_read_total") > 0, live
                )
                time.sleep(1.0)
                during = scrape(port)
                producing.stop()
                # Counted while offers flow (per batch, not at the end).
                assert total(during, "jobpulse_dataflow_records_read_total") > total(
                    first, "jobpulse_dataflow_records_read_total"
                )
                for i in range(bad):
                    feed.producer.produce(settings.offers_topic, b"not json", f"bad-{i}".encode())
                feed.flush()
                sent = feed.sent + bad
                wait_for_records(settings, sent, live)
                caught_up = wait_for_scrape(
                    port,
                    lambda m: (
                        total(m, "jobpulse_dataflow_records_processed_total") == sent
                        and total(m, "jobpulse_dataflow_lag_records") == 0
                    ),
                    live,
                )
                _check_live_metrics(settings, cli, caught_up, sent, bad, feed)
                healthy = cli(settings, "status", "--json")
                _check_status(settings, healthy, live.pid, bad)
                time.sleep(1.5)  # one more progress line, caught up
                assert stop(live) == 0, log_path.read_text()[-3000:]
            finally:
                if live.poll() is None:
                    live.kill()
        lines = json_lines(log_path.read_text())
        assert f"metrics at http://127.0.0.1:{port}/metrics" in {line["message"] for line in lines}
        progress = progress_lines(lines, "run")
        assert progress, lines
        done = [number(m["done"]) for m in progress]
        assert done == sorted(done)
        assert (done[-1], progress[-1]["lag"], progress[-1]["eta"]) == (sent, "0", "caught up")

        redis_server.stop()
        down = cli(settings, "status", "--json", timeout=60)
        assert down.returncode == 3, down.stdout + down.stderr
        reason = one_error_line(down)
        assert reason.startswith("jobpulse: unhealthy: ") and "redis" in reason.lower(), reason
        report = orjson.loads(down.stdout)
        assert report["healthy"] is False and report["dataflow"] is None
        assert report["topics"][settings.offers_topic]["records"] == sent  # Kafka still seen
    finally:
        redis_server.stop()


def _check_live_metrics(
    settings: Settings, cli: CliRunner, m: Scrape, sent: int, bad: int, feed: Feed
) -> None:
    """The scrape of a caught-up run equals what was produced, Redis, Kafka and breakdown."""
    store = Store.connect(settings)
    redis_totals = totals(store.partitions().values())
    assert total(m, "jobpulse_dataflow_records_read_total") == sent  # no restart: read once
    assert total(m, "jobpulse_dataflow_records_processed_total") == redis_totals.records == sent
    assert total(m, "jobpulse_dataflow_dlq_records_total") == redis_totals.dlq == bad
    assert total(m, "jobpulse_dataflow_messages_written_total", output="dlq") == bad
    assert total(m, "jobpulse_dataflow_stale_records_total") == redis_totals.stale
    assert total(m, "jobpulse_dataflow_late_deltas_total") == redis_totals.late
    assert total(m, "jobpulse_dataflow_unknown_deletes_total") == redis_totals.unknown_deletes
    ends = topics.end_offsets(settings, settings.offers_topic)
    offsets = by_label(m, "jobpulse_dataflow_processed_offset", "partition")
    assert {int(p): int(o) for p, o in offsets.items()} == ends
    assert total(m, "jobpulse_dataflow_lag_records") == 0
    deltas = read_to_end(settings, settings.deltas_topic)
    assert total(m, "jobpulse_dataflow_messages_written_total", output="deltas") == len(deltas)
    # Open offers per cell: the truth, Redis and `breakdown --json` all agree with the gauge.
    gauge = {
        (labels["category"], labels["continent"]): value
        for labels, value in m["jobpulse_dataflow_open_offers"]
        if value
    }
    truth = {(c.category, c.continent): n for c, n in feed.counts().items() if n}
    assert gauge == truth == {(c.category, c.continent): n for c, n in store.cells().items()}
    shown = orjson.loads(cli(settings, "breakdown", "--json").stdout)
    assert {(cat, cont): n for cat, row in shown["counts"].items() for cont, n in row.items()} == (
        gauge
    )
    assert shown["total"] == sum(gauge.values())
    # The timings are there, one observation per batch.
    for step in ("parse", "enrich", "open_offers", "delta_messages"):
        assert total(m, "jobpulse_dataflow_batch_seconds_count", step=step) > 0, step
    assert total(m, "jobpulse_dataflow_redis_write_seconds_count") > 0
    assert total(m, "jobpulse_dataflow_kafka_write_seconds_count", output="deltas") > 0
    assert total(m, "jobpulse_dataflow_snapshot_seconds_count") > 0
    assert total(m, "jobpulse_build_info", component="dataflow") == 1
    assert total(m, "jobpulse_outages_total") == 0


def _check_status(
    settings: Settings, result: subprocess.CompletedProcess[str], pid: int, bad: int
) -> None:
    """``status --json`` of a healthy live run agrees with Redis and Kafka."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    report = orjson.loads(result.stdout)
    assert report["healthy"] is True and report["problems"] == []
    flow = report["dataflow"]
    assert flow["running"] is True and flow["lease"]["pid"] == pid
    store = Store.connect(settings)
    kafka_ends = topics.end_offsets(settings, settings.offers_topic)
    assert kafka_ends is not None
    assert report["topics"][settings.offers_topic]["end_offsets"] == {
        str(p): o for p, o in kafka_ends.items()
    }
    assert {int(p): v["offset"] for p, v in flow["partitions"].items()} == {
        p: pr.offset for p, pr in store.partitions().items()
    }
    assert {int(p): v["end"] for p, v in flow["partitions"].items()} == kafka_ends
    assert flow["lag"] == 0 and flow["dlq"] == bad
    assert flow["records"] == totals(store.partitions().values()).records
    assert flow["open_offers"] == store.breakdown().total
    assert flow["last_write_age_s"] is not None and flow["last_write_age_s"] < 30
    assert report["sink"] is None and report["dashboard"]["configured"] is False


# -- progress -----------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.partitions(2)
def test_progress_on_a_terminal_is_one_line_redrawn_then_the_summary(
    settings: Settings, tmp_path: Path
) -> None:
    feed = Feed(settings, seed=32)
    feed.open_offers("pty", 3000)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    run = subprocess.Popen(
        [sys.executable, "-m", "jobpulse", "run", "--once"],
        env=child_env(settings, TERM="xterm"),
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: every process on it is gone
                    break
                if not chunk:
                    break
                output += chunk
            elif run.poll() is not None:
                break
        assert run.wait(timeout=30) == 0, output.decode(errors="replace")[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
        os.close(master)
    text = output.decode(errors="replace")
    assert "\r" in text and "\x1b[" in text  # drawn in place, with the terminal's codes
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    frames = [f for f in re.split(r"[\r\n]+", plain) if f.startswith("run ")]
    assert frames, plain[-2000:]
    assert re.search(r"3,000 records [\d,]+ records/s lag 0 caught up", frames[-1]), frames[-1]
    summary = plain.index("processed 3000 records in")
    assert summary > plain.rindex(frames[-1])  # the last frame, then the summary
    assert "Traceback" not in plain


def test_plain_progress_is_a_log_line_per_interval_when_something_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    display = ProgressDisplay("run", interval_s=5, terminal=False, clock=lambda: now[0])
    display.start()
    caplog.set_level(logging.INFO, logger="jobpulse.progress")
    for second, sample in [
        (1, Sample(100, 900)),  # too soon after the start
        (5, Sample(500, 500)),  # shown: 100 records/s over 5 s, ETA 5 s
        (7, Sample(700, 300)),  # too soon
        (10, Sample(1000, 0)),  # shown
        (15, Sample(1000, 0)),  # nothing changed: not shown
        (20, Sample(1100, None)),  # shown, the lag unknown
    ]:
        now[0] = second
        display.show(sample)
    assert [r.getMessage() for r in caplog.records] == [
        "run: 500 records, 100 records/s, lag 500, ETA 5s",
        "run: 1,000 records, 100 records/s, lag 0, caught up",
        "run: 1,100 records, 10 records/s, lag unknown, ETA ?",  # over the last 10 s
    ]


# -- the PostgreSQL sink and the dashboard ------------------------------------------------------


@pytest.mark.integration
def test_the_sink_exports_rows_lag_and_write_time(sink_settings: Settings, tmp_path: Path) -> None:
    from test_postgres_sink import Offers, produce, truth

    rows = Offers().random(600, ids=150, seed=33)
    produce(sink_settings, rows)
    _, counts = truth(rows)
    port = free_port()
    log_path = tmp_path / "sink.log"
    with open(log_path, "w") as log:
        sink = spawn_cli(
            sink_settings,
            "sink",
            "--log-format",
            "json",
            env={"JOBPULSE_METRICS_PORT": str(port), "JOBPULSE_PROGRESS_SECONDS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            m = wait_for_scrape(
                port,
                lambda m: (
                    total(m, "jobpulse_sink_rows_written_total") == len(rows)
                    and total(m, "jobpulse_sink_lag_records") == 0
                ),
                sink,
            )
            time.sleep(1.5)  # a progress line, caught up
        finally:
            sink.send_signal(signal.SIGTERM)
            assert sink.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    outcomes = by_label(m, "jobpulse_sink_rows_written_total", "outcome")
    assert outcomes == {
        k: v
        for k, v in {
            "upsert": counts["upserts"],
            "delete": counts["deletes"],
            "ignored": counts["ignored"],
        }.items()
        if v
    }
    assert total(m, "jobpulse_sink_write_seconds_count") >= 1
    assert total(m, "jobpulse_build_info", component="sink") == 1
    progress = progress_lines(json_lines(log_path.read_text()), "sink")
    assert progress and number(progress[-1]["done"]) == len(rows), progress
    assert progress[-1]["eta"] == "caught up"


@pytest.mark.integration
def test_the_dashboard_exports_sessions_and_api_latency(settings: Settings, tmp_path: Path) -> None:
    from test_dashboard_security import dashboard, pull_page, request

    port = free_port()
    env = {"JOBPULSE_METRICS_PORT": str(port)}
    with dashboard(settings, tmp_path / "dashboard.log", env) as served:
        for _ in range(3):
            assert request(served.url, "/api/breakdown")[0] == 200
        pull_page(served.url)
        m = scrape(port)
    assert total(m, "jobpulse_dashboard_api_request_seconds_count", code="200") == 3
    assert total(m, "jobpulse_dashboard_sessions_opened_total") >= 1
    assert total(m, "jobpulse_build_info", component="dashboard") == 1


# -- logs -----------------------------------------------------------------------------------------


def test_an_outage_and_a_reader_failing_log_once_each_way_as_json_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Many failed attempts, then recovery: two lines per service, never one per retry;
    the metrics count the outage once; a password quoted by a message is masked."""
    from confluent_kafka import KafkaError

    settings = Settings(redis_url="redis://default:hunter2-secret@redis.example:6379/0")
    handler = logs._CurrentStderr()
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.Scrub(settings))
    logger = logging.getLogger("jobpulse.test-operations")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    before = metrics.OUTAGES.labels("redis")._value.get()
    try:
        outage = Outage("Redis at redis.example:6379", limit_s=300, logger=logger)
        for _ in range(50):
            outage.failed(ConnectionError(f"refused by {settings.redis_url}"))
        outage.succeeded()
        health = ReadHealth("the offers topic", "the readers wait", logger)
        for _ in range(50):
            health.error(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
        for _ in range(3):
            health.ok()
    finally:
        logger.removeHandler(handler)
    lines = json_lines(capsys.readouterr().err)
    messages = [line["message"] for line in lines]
    assert len(lines) == 4, messages
    assert "unreachable" in messages[0] and "reachable again" in messages[1]
    assert "librdkafka retries" in messages[2] and "(50 errors meanwhile)" in messages[3]
    assert "hunter2-secret" not in "".join(messages) and "default:***@" in messages[0]
    assert {line["logger"] for line in lines} == {"jobpulse.test-operations"}
    assert metrics.OUTAGES.labels("redis")._value.get() == before + 1
    assert metrics.OUTAGE_ACTIVE.labels("redis")._value.get() == 0


def test_a_bad_log_format_is_one_line_and_exit_2(cli: CliRunner) -> None:
    result = cli(Settings(), "run", "--once", "--log-format", "xml")
    assert result.returncode == 2
    assert one_error_line(result) == "jobpulse: JOBPULSE_LOG_FORMAT must be text or json, got 'xml'"


# -- the Grafana board --------------------------------------------------------------------------


#: PromQL words that are not metric names.
_PROMQL = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "le", "and", "or",
    "unless", "offset", "bool", "label_values", "topk", "bottomk", "abs", "clamp_min",
}  # fmt: skip


def _queried_metrics(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers that are not functions,
    keywords, label names (inside ``{}`` or after ``by``/``on``), ranges or strings."""
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values and strings
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # ranges
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped
    )
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {n for n in names if n not in _PROMQL and not re.fullmatch(r"\d.*", n)}


def test_the_grafana_board_queries_only_metrics_the_code_exports() -> None:
    board = json.loads(GRAFANA.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    exported = metrics.exported_names() | {
        "process_resident_memory_bytes",  # prometheus_client's process collector
        "process_cpu_seconds_total",
    }
    queried = set().union(*(_queried_metrics(e) for e in exprs))
    assert queried <= exported, queried - exported
    # Every family jobpulse exports is on the board (a new metric needs a panel).
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in metrics.exported_names()}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in queried}
    assert families <= shown, families - shown
    assert _queried_metrics(
        'sum by (le, step) (rate(jobpulse_dataflow_batch_seconds_bucket{job=~"$job"}[5m]))'
    ) == {"jobpulse_dataflow_batch_seconds_bucket"}
