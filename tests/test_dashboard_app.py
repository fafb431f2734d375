"""The dashboard's Bokeh models built from snapshots, without a browser or a server."""

from __future__ import annotations

import html
import time

import redis
from bokeh.models import Legend
from confluent_kafka import KafkaError, KafkaException
from conftest import free_port

from jobpulse import breakdown as breakdown_table
from jobpulse.dashboard import app
from jobpulse.dashboard import view_model as vm
from jobpulse.dashboard.feed import Feed, error_text
from jobpulse.delta import Cell
from jobpulse.settings import load
from jobpulse.store import Breakdown, PartitionProgress, WindowCounts

SETTINGS = load(env={})
LONG = "Marketing / Communication"


def _snapshot(windows: tuple[WindowCounts, ...] = ()) -> vm.Snapshot:
    counts = {LONG: {"Africa": 3, "Antarctica": 2}, "Tech": {"Europe": 9}}
    return vm.Snapshot(breakdown=Breakdown(counts=counts), windows=windows, redis_ok=True)


def test_legends_sit_outside_the_plot_area() -> None:
    session = app.DashboardSession(SETTINGS, _snapshot())
    for fig in (session.bars, session.opened_chart, session.closed_chart):
        assert any(isinstance(r, Legend) for r in fig.right), fig.name
        assert not any(isinstance(r, Legend) for r in fig.center), fig.name


def test_category_column_fits_the_longest_category_and_grows_with_it() -> None:
    session = app.DashboardSession(SETTINGS, vm.Snapshot(breakdown=Breakdown({}), redis_ok=True))
    narrow = session.table.columns[0].width
    session.apply(_snapshot())
    wide = session.table.columns[0].width
    assert wide > narrow
    assert wide >= len(LONG) * app.CATEGORY_CHAR_PX
    assert session.table.autosize_mode == "none", "force-fit would share the width evenly"


def test_every_number_column_is_right_aligned_and_shows_unknown_as_a_dash() -> None:
    session = app.DashboardSession(SETTINGS, vm.Snapshot(redis_ok=False))
    for table in (session.table, session.partition_table):
        for column in table.columns[1:]:
            assert column.formatter.text_align == "right", column.field
            assert column.formatter.null_format == "–", column.field
        assert app.TABLE_CSS in table.stylesheets


def test_redis_never_read_shows_dashes_and_no_empty_note() -> None:
    never = vm.Snapshot(redis_ok=False, redis_error="refused")
    session = app.DashboardSession(SETTINGS, never)
    assert not session.empty_note.visible
    assert 'data-testid="open-offers">–<' in session.cards.text
    assert set(session.table_source.data[breakdown_table.TOTAL_COLUMN]) == {None}
    assert "nothing has been read yet" in app.banner_html(never, SETTINGS)
    empty = vm.Snapshot(breakdown=Breakdown(counts={}), redis_ok=True)
    session.apply(empty)
    assert session.empty_note.visible
    assert 'data-testid="open-offers">0<' in session.cards.text


def test_the_window_still_filling_is_shaded_and_named_in_the_legend() -> None:
    window_ms = SETTINGS.window_seconds * 1000
    now_ms = int(time.time() * 1000)
    current = now_ms // window_ms * window_ms
    done = WindowCounts(current - window_ms, opened={Cell("Tech", "Europe"): 4})
    filling = WindowCounts(current, opened={Cell("Tech", "Europe"): 1})
    session = app.DashboardSession(SETTINGS, _snapshot((done, filling)))
    for box, item in session.filling_marks:
        assert box.visible and item.visible
        assert box.left < current < box.right
    session.apply(_snapshot((filling.__class__(current - 2 * window_ms), done)))
    assert not any(box.visible or item.visible for box, item in session.filling_marks)


def test_lag_is_never_negative_when_kafka_end_offsets_are_older() -> None:
    snapshot = vm.Snapshot(
        breakdown=Breakdown(counts={}),
        redis_ok=True,
        partitions={0: PartitionProgress(offset=50, records=50)},
        high_watermarks={0: 40},
    )
    session = app.DashboardSession(SETTINGS, snapshot)
    assert session.partition_source.data["end"][0] == 50
    assert session.partition_source.data["lag"][0] == 0


def _kafka_status(status: str) -> str:
    """The Kafka part of the health row's HTML (up to the next item)."""
    return status[status.index('data-testid="kafka-status"') : status.index("Last update")]


def test_why_kafka_is_unreachable_is_shown_beside_its_status() -> None:
    error = 'KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata: <transport>"}'
    down = vm.Snapshot(redis_ok=True, kafka_ok=False, kafka_error=error)
    session = app.DashboardSession(SETTINGS, down)
    kafka = _kafka_status(session.status.text)
    assert "Kafka unreachable" in kafka
    assert f'data-testid="kafka-error">({html.escape(error)})<' in kafka
    # Once Kafka answers, the reason goes.
    session.apply(vm.Snapshot(redis_ok=True, kafka_ok=True))
    assert "kafka-error" not in session.status.text
    assert "Kafka reachable" in _kafka_status(session.status.text)


def test_the_feed_masks_secrets_in_the_errors_it_shows() -> None:
    settings = load(
        env={
            "JOBPULSE_REDIS_URL": "redis://default:hunter2secret@redis.example:6379/0",
            "JOBPULSE_KAFKA__SASL__PASSWORD": "kafkapass99",
        }
    )
    kafka = KafkaException(KafkaError(KafkaError._AUTHENTICATION, "SASL kafkapass99\nrefused"))
    shown = error_text(settings, kafka)
    assert "kafkapass99" not in shown and "***" in shown
    assert "\n" not in shown, "one line"
    url = redis.ConnectionError("Error connecting to redis://default:hunter2secret@redis.example")
    assert "hunter2secret" not in error_text(settings, url)
    # Masked before the cut to 200 characters: no piece of a secret at the end either.
    long = error_text(settings, RuntimeError("x" * 195 + " kafkapass99"))
    assert len(long) <= 200 and "kafk" not in long
    assert error_text(settings, RuntimeError()) == "RuntimeError"


def test_an_unreachable_kafka_reaches_the_page_with_its_reason() -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens on either
    settings = load(
        env={
            "JOBPULSE_KAFKA_BOOTSTRAP": nowhere,
            "JOBPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        }
    )
    feed = Feed(settings, kafka_every_s=0.5).start()
    try:
        deadline = time.monotonic() + 20
        while feed.latest.kafka_ok is not False:
            assert time.monotonic() < deadline, "the feed never reported Kafka unreachable"
            time.sleep(0.1)
        snapshot = feed.latest
    finally:
        feed.stop()
    assert snapshot.kafka_error and snapshot.kafka_checks >= 1
    kafka = _kafka_status(app.status_html(snapshot, settings, time.time()))
    assert f"({html.escape(snapshot.kafka_error)})" in kafka
    assert f'data-checks="{snapshot.kafka_checks}"' in kafka


def test_the_postgres_sink_lag_shows_only_with_a_rows_topic() -> None:
    snapshot = vm.Snapshot(breakdown=Breakdown(counts={}), redis_ok=True, sink_lag=12_345)
    without = load(env={})
    with_rows = load(env={"JOBPULSE_ROWS_TOPIC": "jobpulse.offer-rows"})
    assert "sink-lag" not in app.status_html(snapshot, without, time.time())
    shown = app.status_html(snapshot, with_rows, time.time())
    assert 'data-testid="sink-lag">12,345</b>' in shown
    unknown = app.status_html(vm.Snapshot(redis_ok=True), with_rows, time.time())
    assert 'data-testid="sink-lag">–</b>' in unknown
