"""``jobpulse sink`` against real Kafka and PostgreSQL: rows in the topic → table ``offers``.

The offer rows are produced straight to a rows topic (what the dataflow writes is another
component's business), and the table is compared, whole, with a truth computed here by
applying the rows one by one: re-sends, moves, deletes, deletes of unknown ids, stale
records, same-millisecond records, replays, a ``kill -9`` mid-batch, PostgreSQL stopped
mid-stream.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CliRunner, forget_progress, free_port, one_error_line, spawn_cli

from jobpulse import kafka, pg, topics
from jobpulse.offer_row import OfferRow, sink_group, version_of
from jobpulse.postgres import schema
from jobpulse.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_764_064_800_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The columns compared with the truth: all but ``updated_at`` (the sink's clock).
COLUMNS = (
    "id, category, continent, latitude, longitude, profession_id, name, contract_type, "
    "published_at, opened_at, closed_at, source_partition, source_offset, source_timestamp, "
    "version"
)
FIELDS = (
    "category",
    "continent",
    "latitude",
    "longitude",
    "profession_id",
    "name",
    "contract_type",
)


# -- fixtures ------------------------------------------------------------------------------


# -- helpers -------------------------------------------------------------------------------


def ms(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(milliseconds=value)


def truth(rows: Sequence[OfferRow]) -> tuple[dict[str, tuple[Any, ...]], dict[str, int]]:
    """The table after applying ``rows`` one by one (rows of one id in topic order), and
    how many upserts / deletes changed it and how many rows were ignored."""
    table: dict[str, dict[str, Any]] = {}
    counts = {"upserts": 0, "deletes": 0, "ignored": 0}
    for row in rows:
        old = table.get(row.id)
        if old is not None and (row.version, row.offset) <= (old["version"], old["source_offset"]):
            counts["ignored"] += 1
            continue
        if row.op == "upsert":
            counts["upserts"] += 1
            was_open = old is not None and old["closed_at"] is None
            new = {f: _text(getattr(row, f)) for f in FIELDS}
            new["published_at"] = ms(row.published_at_ms)
            new["opened_at"] = old["opened_at"] if was_open else ms(row.event_ms)
            new["closed_at"] = None
        else:
            counts["deletes"] += 1
            new = dict.fromkeys((*FIELDS, "published_at", "opened_at"))
            if old is not None:
                new.update({f: old[f] for f in (*FIELDS, "published_at", "opened_at")})
            new["closed_at"] = ms(row.event_ms)
        new.update(
            source_partition=row.partition,
            source_offset=row.offset,
            source_timestamp=ms(row.timestamp_ms),
            version=row.version,
        )
        table[row.id] = new
    return {
        offer_id: (offer_id, *(v[c] for c in COLUMNS.split(", ")[1:]))
        for offer_id, v in table.items()
    }, counts


def _text(value: Any) -> Any:
    """What PostgreSQL stores of a field: text without NUL characters."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def table(settings: Settings, columns: str = COLUMNS) -> dict[str, tuple[Any, ...]]:
    with pg.connect(settings) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT {columns} FROM offers")}


def produce(settings: Settings, records: Sequence[OfferRow | tuple[bytes, bytes]]) -> None:
    """Write offer rows (or raw key/value pairs) to the rows topic, keyed by id."""
    failed: list[Any] = []
    producer = kafka.producer(
        settings,
        required=kafka.IDEMPOTENT,
        tunables={"linger.ms": 20},
        on_delivery=lambda err, _msg: failed.append(err) if err else None,
    )
    assert settings.rows_topic
    for record in records:
        key, value = (record.key(), record.to_json()) if isinstance(record, OfferRow) else record
        kafka.produce(producer, settings.rows_topic, value, key)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failed


def lag(settings: Settings) -> int | None:
    assert settings.rows_topic
    return topics.group_lag(settings, sink_group(settings.rows_topic), settings.rows_topic)


def summary_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("sink: wrote")]
    assert len(lines) == 1, result.stdout
    return lines[0]


def counted(counts: dict[str, int]) -> str:
    rows = sum(counts.values())
    return (
        f"wrote {rows} rows ({counts['upserts']} upserts, {counts['deletes']} deletes, "
        f"{counts['ignored']} stale/replayed ignored)"
    )


class Offers:
    """Offer rows as the dataflow would write them for records of ``partitions`` offers
    partitions: offsets per partition, order times non-decreasing per partition."""

    def __init__(self, partitions: int = 4) -> None:
        self.next_offset = [0] * partitions
        self.clock = [T0] * partitions

    def row(
        self, offer_id: str, op: str = "upsert", *, partition: int = 0, at: int | None = None, **kw
    ) -> OfferRow:
        """The row of the next record of ``partition``, at order time ``T0 + at`` (never
        before that partition's last one)."""
        offset = self.next_offset[partition]
        self.next_offset[partition] += 1
        ts = max(self.clock[partition], T0 + at) if at is not None else self.clock[partition]
        self.clock[partition] = ts
        fields: dict[str, Any] = {}
        if op == "upsert":
            fields = {
                "category": "Tech",
                "continent": "Europe",
                "latitude": 48.85,
                "longitude": 2.35,
                "profession_id": 17,
                "name": f"offer {offer_id}",
                "contract_type": "FULL_TIME",
                "published_at_ms": ts - 1000,
                **kw,
            }
        return OfferRow(
            id=offer_id,
            op=op,  # type: ignore[arg-type]
            event_ms=fields.get("published_at_ms") or ts,
            partition=partition,
            offset=offset,
            timestamp_ms=ts,
            version=version_of(ts, partition),
            **fields,
        )

    def random(self, count: int, ids: int, seed: int) -> list[OfferRow]:
        """``count`` rows over ``ids`` offers: upserts, moves, deletes, exact replays, and
        stale records (partitions whose clocks lag behind the others)."""
        rng = random.Random(seed)
        rows: list[OfferRow] = []
        cells = [("Tech", "Europe"), ("Sales", "Asia"), ("Health", "Africa"), (None, None)]
        for i in range(count):
            if rows and rng.random() < 0.03:
                rows.append(rng.choice(rows))  # a replay of an earlier row
                continue
            partition = rng.randrange(len(self.clock))
            # Partition p's clock lags p × 0.4 s behind partition 0's: stale records.
            at = i * 2 - partition * 400 - rng.randrange(50)
            offer_id = f"r-{rng.randrange(ids)}"
            if rng.random() < 0.2:
                rows.append(self.row(offer_id, "delete", partition=partition, at=at))
            else:
                category, continent = rng.choice(cells)
                rows.append(
                    self.row(
                        offer_id,
                        partition=partition,
                        at=at,
                        category=category,
                        continent=continent,
                        profession_id=rng.choice([None, 3, 17]),
                        latitude=rng.uniform(-60, 60),
                    )
                )
        return rows


def scenario() -> list[OfferRow]:
    """Every case once, then random traffic."""
    o = Offers()
    return [
        # a re-send keeps opened_at; a move changes the fields and keeps opened_at
        o.row("resent", at=0),
        o.row("moved", at=1),
        o.row("resent", at=10),
        o.row("moved", at=11, category="Sales", continent="Asia", name="moved"),
        # a delete closes and keeps the fields; a later upsert re-opens at its event time
        o.row("closed", at=20),
        o.row("closed", "delete", at=30),
        o.row("reopened", at=20),
        o.row("reopened", "delete", at=30),
        o.row("reopened", at=40, category="Ops"),
        # a delete of an unknown id: a closed row with null fields; an older upsert (from a
        # partition behind the others) does not open it
        o.row("unknown", "delete", partition=1, at=500),
        o.row("unknown", partition=2, at=100),
        # a stale record (an older version after a newer one) does not overwrite
        o.row("stale", partition=1, at=600, category="Newest"),
        o.row("stale", partition=3, at=200, category="Older"),
        o.row("stale", "delete", partition=3, at=300),
        # same partition, same millisecond: the later offset wins
        o.row("same-ms", partition=2, at=700),
        o.row("same-ms", "delete", partition=2, at=700),
        # text PostgreSQL cannot hold (NUL) is dropped, not fatal
        o.row("nul", at=800, name="a\x00b"),
        *Offers().random(3000, ids=300, seed=7),
    ]


# -- tests ---------------------------------------------------------------------------------


def test_the_table_equals_the_rows_applied_one_by_one(
    sink_settings: Settings, cli: CliRunner
) -> None:
    rows = scenario()
    produce(sink_settings, rows[:1000])
    produce(sink_settings, [(b"x", b"not json"), (b"y", b'{"id": "y", "op": "upsert"}')])
    produce(sink_settings, rows[1000:])
    expected, counts = truth(rows)
    assert expected["unknown"][1:11] == (None,) * 9 + (ms(T0 + 500),)
    assert lag(sink_settings) == len(rows) + 2

    # Small batches: rows of one offer land in different batches and in the same one.
    first = cli(sink_settings, "sink", "--once", "--batch-size", "7")
    assert f"sink: {counted(counts)}, 2 records skipped (not offer rows)" in summary_line(first)
    assert summary_line(first).endswith("; lag 0")
    assert "only the dataflow should write this topic" in first.stderr
    assert table(sink_settings) == expected
    assert lag(sink_settings) == 0

    # Nothing new: nothing to do.
    assert "wrote 0 rows" in summary_line(cli(sink_settings, "sink", "--once"))

    # A replay from the start (a fresh group) changes nothing, not even updated_at.
    before = table(sink_settings, "*")
    forget_progress(sink_settings)
    replay = cli(sink_settings, "sink", "--once")
    ignored = f"wrote {len(rows)} rows (0 upserts, 0 deletes, {len(rows)} stale/replayed ignored)"
    assert ignored in summary_line(replay)
    # Both undecodable records in one batch: one line for both.
    warnings = [line for line in replay.stderr.splitlines() if "not offer rows" in line]
    assert len(warnings) == 1, replay.stderr
    assert "skipped 2 record(s)" in warnings[0]
    assert table(sink_settings, "*") == before

    # One big batch into an empty table: the same table (batch boundaries do not matter).
    with pg.connect(sink_settings) as conn:
        conn.execute("TRUNCATE offers")
    forget_progress(sink_settings)
    assert counted(counts) in summary_line(cli(sink_settings, "sink", "--once"))
    assert table(sink_settings) == expected


def test_kill_9_mid_batch_loses_and_duplicates_nothing(
    sink_settings: Settings, cli: CliRunner
) -> None:
    rows = Offers().random(60_000, ids=20_000, seed=11)
    produce(sink_settings, rows)
    sink = spawn_cli(sink_settings, "sink", "--batch-size", "2000")
    try:
        deadline = time.monotonic() + 60
        while (left := lag(sink_settings)) is None or left >= len(rows):
            assert sink.poll() is None, sink.communicate()
            assert time.monotonic() < deadline, "the sink committed nothing in 60 s"
            time.sleep(0.02)
        os.kill(sink.pid, signal.SIGKILL)  # after its first commit, in the middle of a batch
        sink.communicate(timeout=10)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.communicate()
    assert 0 < lag(sink_settings) < len(rows)  # killed before the end

    resumed = cli(sink_settings, "sink", "--once")
    assert summary_line(resumed).endswith("; lag 0")
    assert table(sink_settings) == truth(rows)[0]


@pytest.fixture
def own_postgres(settings: Settings, cli: CliRunner) -> Iterator[Settings]:
    """``settings`` with a PostgreSQL of this test's own (``jobpulse stack up`` with a
    private state dir and a free port; the shared Kafka and Redis are reused)."""
    folder = Path(tempfile.mkdtemp(prefix="jobpulse-test-"))
    folder.chmod(0o711)  # as root, PostgreSQL runs as the postgres user: it must enter it
    own = settings.with_overrides(
        postgres_url=f"postgresql://jobpulse@localhost:{free_port()}/jobpulse",
        state_dir=folder / "state",
    )
    try:
        up = cli(own, "stack", "up")
        assert up.returncode == 0, up.stderr
        yield own
    finally:
        cli(own, "stack", "down")
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_stopped_mid_stream_is_waited_out(own_postgres: Settings, cli: CliRunner) -> None:
    rows_topic = f"{own_postgres.redis_prefix}.rows"
    sink_settings = own_postgres.with_overrides(rows_topic=rows_topic, outage_limit_seconds=120)
    topics.ensure_topics(sink_settings, [rows_topic], partitions=3)
    rows = Offers().random(4000, ids=1000, seed=5)
    produce(sink_settings, rows[:2000])
    sink = spawn_cli(sink_settings, "sink", "--batch-size", "500")
    try:
        wait_for_lag_zero(sink_settings, sink)
        stopped = cli(sink_settings, "stack", "down")  # only this test's PostgreSQL
        assert stopped.returncode == 0, stopped.stderr
        produce(sink_settings, rows[2000:])
        time.sleep(10)
        assert sink.poll() is None, "the sink stopped while PostgreSQL was down"
        assert lag(sink_settings) == 2000  # nothing committed meanwhile
        assert cli(sink_settings, "stack", "up").returncode == 0
        wait_for_lag_zero(sink_settings, sink)
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.communicate()
        topics.delete_topics(sink_settings, [rows_topic])
        forget_progress(sink_settings)
    assert sink.returncode == 0, err
    assert "Traceback" not in err
    lost = [line for line in err.splitlines() if "PostgreSQL unreachable" in line]
    back = [line for line in err.splitlines() if "PostgreSQL reachable again" in line]
    assert len(lost) == 1 and len(back) == 1, err
    assert "waiting up to 120 s" in lost[0]
    assert "stopped (Ctrl-C or SIGTERM)" in out
    assert table(sink_settings) == truth(rows)[0]


def wait_for_lag_zero(settings: Settings, sink: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while lag(settings) != 0:
        assert sink.poll() is None, sink.communicate()
        assert time.monotonic() < deadline, f"the sink still lags {lag(settings)}"
        time.sleep(0.1)


def test_one_line_errors(settings: Settings, cli: CliRunner) -> None:
    unset = cli(settings, "sink", "--once")
    assert unset.returncode == 2
    assert "set JOBPULSE_ROWS_TOPIC" in one_error_line(unset)

    missing = cli(settings.with_overrides(rows_topic="no-such-rows-topic"), "sink", "--once")
    assert missing.returncode == 2
    assert "the rows topic no-such-rows-topic does not exist" in one_error_line(missing)
    assert topics.group_lag(settings, "any-group", "no-such-rows-topic") is None

    rows_topic = f"{settings.redis_prefix}.rows"
    topics.ensure_topics(settings.with_overrides(rows_topic=rows_topic), [rows_topic], 1)
    try:
        closed_port = free_port()  # nothing listens there
        url = f"postgresql://jobpulse:s3cret-pw@127.0.0.1:{closed_port}/jobpulse"
        down = cli(settings.with_overrides(rows_topic=rows_topic, postgres_url=url), "sink")
    finally:
        topics.delete_topics(settings, [rows_topic])
    assert down.returncode == 1
    line = one_error_line(down)
    assert "PostgreSQL" in line and "not reachable" in line
    assert f"postgresql://jobpulse:***@127.0.0.1:{closed_port}/jobpulse" in line
    assert "s3cret-pw" not in down.stderr + down.stdout


def test_schema_migrates_once_and_refuses_a_newer_one(sink_settings: Settings) -> None:
    with pg.connect(sink_settings) as conn:
        assert schema.migrate(conn) == (0, schema.VERSION)
        assert schema.migrate(conn) == (schema.VERSION, schema.VERSION)
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = 'offers'"
        ).fetchall()
        assert ("offers_open_cells",) in indexes
        conn.execute("UPDATE jobpulse_schema SET version = version + 1")
        conn.commit()
        with pytest.raises(schema.SchemaTooNew, match="newer than this jobpulse"):
            schema.migrate(conn)
