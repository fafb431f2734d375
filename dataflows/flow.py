"""The jobpulse dataflow, top-down as in the diagram::

    offers topic ─▶ parse ─┬─▶ rejected ─▶ DLQ topic
                           └─▶ enrich (category, continent) ─┬─▶ offer rows ─▶ rows topic
                                                             │   (optional: PostgreSQL sink)
                           ┌─────────────────────────────────┘
                           └─▶ open offers (by offer-key shard)
                                   ├─▶ delta messages ─▶ deltas topic
                                   ├─▶ pre-aggregate ─▶ cell counts (keyed by cell) ─┐
                                   │                       └─▶ late deltas ─┐        │
                                   └─▶ partition counters ───────────────▶ progress ─┴─▶ Redis

Every step works on chunks (one per Kafka partition per poll, regrouped per state shard after
enrichment), never per offer. The steps are in :mod:`.steps`, their logic in pure modules
(:mod:`.open_offers`, :mod:`.counting`, :mod:`.geocoding`); this module only wires them, and
takes its I/O as arguments, so tests build the same flow with testing sources and sinks.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from jobpulse.settings import Settings

from .items import OutMessage, RawChunk
from .steps import (
    CellCountLogic,
    DeltaSerializer,
    Enricher,
    OpenOffersLogic,
    Parser,
    Preaggregator,
    ProgressLogic,
    dlq_messages,
    is_dlq_batch,
    is_row_batch,
    late_counts,
    partition_counts,
    row_messages,
    timed,
)

FLOW_ID = "jobpulse"


@dataclasses.dataclass(frozen=True)
class FlowSinks:
    """Where the dataflow writes; tests swap in ``bytewax.testing.TestingSink``."""

    deltas: Sink[list[OutMessage]]
    dlq: Sink[list[OutMessage]]
    redis: Sink[Any]
    #: The offer-rows topic (``JOBPULSE_ROWS_TOPIC``); ``None``: no rows are built.
    rows: Sink[list[OutMessage]] | None = None


def build_flow(
    settings: Settings,
    source: Source[RawChunk],
    sinks: FlowSinks,
    professions: dict[int, str],
    offers_partitions: int = 1,
    recovery_dir: Path | None = None,
) -> Dataflow:
    """The whole dataflow, from the offers source to the three sinks.

    ``offers_partitions``: how many partitions the offers topic has (tombstones expire only
    once all of them are past; see :mod:`.open_offers`). ``recovery_dir``: the recovery
    store, where the per-offer state writes its run files (see :mod:`.compact_state`).
    """
    flow = Dataflow(FLOW_ID)
    window_ms = settings.window_seconds * 1000

    raw = op.input("offers", flow, source)
    parsed = op.flat_map_batch("parse", raw, timed("parse", Parser(settings.offers_topic)))
    split = op.branch("split_rejected", parsed, is_dlq_batch)
    op.output("dlq", op.map("dlq_messages", split.trues, dlq_messages), sinks.dlq)

    enriched = op.flat_map_batch(
        "enrich", split.falses, timed("enrich", Enricher(professions, rows=sinks.rows is not None))
    )
    if sinks.rows is not None:
        split_rows = op.branch("split_rows", enriched, is_row_batch)
        op.output("rows", op.map("row_messages", split_rows.trues, row_messages), sinks.rows)
        enriched = split_rows.falses
    offers_state = op.stateful_batch(
        "open_offers",
        enriched,
        OpenOffersLogic.builder(settings.tombstone_seconds * 1000, offers_partitions, recovery_dir),
    )

    deltas = op.flat_map_batch(
        "delta_messages", offers_state, timed("delta_messages", DeltaSerializer(settings))
    )
    op.output("deltas", deltas, sinks.deltas)

    changes = op.flat_map_batch("preaggregate", offers_state, Preaggregator(window_ms))
    refresh = timedelta(seconds=settings.view_refresh_seconds)
    cell_counts = op.stateful_batch(
        "cell_counts", changes, CellCountLogic.builder(window_ms, refresh)
    )

    progress_in = op.merge(
        "progress_inputs",
        op.flat_map_batch("partition_counts", offers_state, partition_counts),
        op.flat_map_batch("late_deltas", cell_counts, late_counts),
    )
    progress = op.stateful_batch("progress", progress_in, ProgressLogic.builder(refresh))

    op.output("redis", op.merge("redis_updates", cell_counts, progress), sinks.redis)
    return flow
