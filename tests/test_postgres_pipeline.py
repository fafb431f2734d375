"""Offers → dataflow → rows topic → PostgreSQL sink, cross-checked with Redis (real services).

The sink's own exactness (re-sends, moves, stale rows, kill -9, outages) is tested in
``tests/test_postgres_sink.py`` on hand-made rows; here the rows come from the dataflow, and
PostgreSQL's open offers must equal Redis and an independent truth, on synthetic offers and
on the public data set.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import CliRunner

from jobpulse import pg
from jobpulse.postgres.breakdown import open_counts
from jobpulse.settings import Settings

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wttj"


def _ok(result: object) -> str:
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined]


def _pipeline(settings: Settings, cli: CliRunner, *produce: str, **env: str) -> None:
    _ok(cli(settings, "produce", *produce, env=env))
    _ok(cli(settings, "run", "--once", env=env, timeout=300))
    _ok(cli(settings, "sink", "--once", env=env, timeout=300))


def _redis_counts(settings: Settings, cli: CliRunner) -> dict[tuple[str, str], int]:
    counts = orjson.loads(_ok(cli(settings, "breakdown", "--json")))["counts"]
    return {(c, k): n for c, row in counts.items() for k, n in row.items() if n}


def _postgres_counts(settings: Settings) -> dict[tuple[str, str], int]:
    with pg.connect(settings) as conn:
        return {(cell.category, cell.continent): n for cell, n in open_counts(conn).items()}


def test_synthetic_offers_end_in_postgres_exactly_and_a_tampered_row_is_caught(
    sink_settings: Settings, cli: CliRunner
) -> None:
    settings = sink_settings
    _pipeline(settings, cli, "--synthetic", "--count", "3000", "--seed", "12")
    redis_counts = _redis_counts(settings, cli)
    assert redis_counts and _postgres_counts(settings) == redis_counts
    # Independently of both: one row per offer id ever sent, open ones = Redis's total.
    with pg.connect(settings) as conn:
        rows, open_rows = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE closed_at IS NULL) FROM offers"
        ).fetchone()
        closed_without_open = conn.execute(
            "SELECT count(*) FROM offers WHERE closed_at IS NOT NULL AND opened_at IS NULL "
            "AND category IS NOT NULL"
        ).fetchone()[0]
    assert open_rows == sum(redis_counts.values())
    assert rows > open_rows  # the synthetic producer closes offers too
    assert closed_without_open == 0  # a closed offer that was open keeps when it opened
    verified = cli(settings, "verify", "--postgres", timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "PostgreSQL equals Redis" in verified.stdout

    with pg.connect(settings) as conn:
        conn.execute(
            "UPDATE offers SET continent = 'Atlantis' WHERE id = "
            "(SELECT id FROM offers WHERE closed_at IS NULL ORDER BY id LIMIT 1)"
        )
        conn.commit()
    tampered = cli(settings, "verify", "--postgres", timeout=300)
    assert tampered.returncode == 1
    assert "mismatch" in tampered.stdout and "Atlantis: PostgreSQL 1, Redis 0" in tampered.stdout
    assert "differ between PostgreSQL and Redis" in tampered.stderr


def test_the_sink_catches_up_after_the_counts_and_replays_change_nothing(
    sink_settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    """The counts never wait for PostgreSQL: the dataflow runs with no sink at all, the sink
    catches up later; a second dataflow pass over the same offers (a recount) adds rows
    already applied, which change nothing."""
    settings = sink_settings
    _ok(cli(settings, "produce", "--synthetic", "--count", "1500", "--seed", "5"))
    _ok(cli(settings, "run", "--once", timeout=300))
    assert _redis_counts(settings, cli)
    with pg.connect(settings) as conn:
        assert conn.execute("SELECT to_regclass('offers')").fetchone() == (None,)
    _ok(cli(settings, "sink", "--once", timeout=300))
    before = _postgres_counts(settings)
    assert before == _redis_counts(settings, cli)
    with pg.connect(settings) as conn:
        updated = conn.execute("SELECT max(updated_at) FROM offers").fetchone()[0]
    fresh = str(tmp_path / "recount")
    _ok(cli(settings, "run", "--once", "--recount", "--recovery-dir", fresh, timeout=300))
    replayed = cli(settings, "sink", "--once", timeout=300)
    _ok(replayed)
    assert _postgres_counts(settings) == before
    with pg.connect(settings) as conn:
        assert conn.execute("SELECT max(updated_at) FROM offers").fetchone()[0] == updated
    assert "stale/replayed ignored" in replayed.stderr + replayed.stdout


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="public data set ../shared/data/wttj absent")
def test_public_data_in_postgres_equals_redis(sink_settings: Settings, cli: CliRunner) -> None:
    env = {"JOBPULSE_PROFESSIONS": str(DATA_DIR / "technical-test-professions.csv")}
    _pipeline(sink_settings, cli, "--csv", str(DATA_DIR / "technical-test-jobs.csv"), **env)
    assert sum(_postgres_counts(sink_settings).values()) == 5069  # SOURCE.md: 5069 offers
    verified = cli(sink_settings, "verify", "--postgres", env=env, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
