"""Producer → Kafka → ``jobpulse run --once`` → Redis: re-import idempotence, public data."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CliRunner

from jobpulse.delta import CONTINENTS, continent_of
from jobpulse.offer import UNKNOWN, Offer, Op
from jobpulse.producer.places import load_places
from jobpulse.producer.synthetic import Lifecycle, SyntheticStream
from jobpulse.settings import Settings

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wttj"
PROFESSIONS = "id,name,category_name\n3,Dev,Tech\n7,Vente,Retail\n12,Compta,Admin\n"
JOBS = (
    "profession_id,contract_type,name,office_latitude,office_longitude\n"
    '7,FULL_TIME,"Vendeur, Paris ""Luxe""",48.85,2.35\n'
    "3,INTERNSHIP,Dev\tLyon,45.76,4.83\n"
    "12,APPRENTICESHIP,Compta Sydney,-33.87,151.21\n"
    "3,FULL_TIME,Dev remote,,\n"
    ",FULL_TIME,No profession,40.71,-74.0\n"
    '7,FULL_TIME,"Vendeur, Paris ""Luxe""",48.85,2.35\n'
)


def produce_and_run(settings: Settings, cli: CliRunner, *produce_args: str, **env: str) -> None:
    result = cli(settings, "produce", *produce_args, env=env)
    assert result.returncode == 0, result.stderr
    result = cli(settings, "run", "--once", env=env, timeout=300)
    assert result.returncode == 0, result.stderr


def breakdown(settings: Settings, cli: CliRunner) -> dict[str, Any]:
    result = cli(settings, "breakdown", "--json")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    cells = {c: {k: n for k, n in row.items() if n} for c, row in counts.items()}
    return {c: row for c, row in cells.items() if row}


def assert_verified(settings: Settings, cli: CliRunner) -> None:
    result = cli(settings, "verify", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reimporting_a_file_does_not_change_the_counts(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "professions.csv").write_text(PROFESSIONS, encoding="utf-8")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(JOBS, encoding="utf-8", newline="")
    env = {"JOBPULSE_PROFESSIONS": str(tmp_path / "professions.csv")}

    produce_and_run(settings, cli, "--csv", str(jobs), **env)
    first = breakdown(settings, cli)
    assert nonzero(first["counts"]) == {
        "Retail": {"Europe": 2},  # the exact duplicate row is a second offer
        "Tech": {"Europe": 1, UNKNOWN: 1},
        "Admin": {"Oceania": 1},
        UNKNOWN: {"North America": 1},
    }
    assert first["total"] == 6

    produce_and_run(settings, cli, "--csv", str(jobs), **env)
    again = breakdown(settings, cli)
    assert nonzero(again["counts"]) == nonzero(first["counts"])
    assert again["total"] == first["total"]
    assert_verified(settings, cli)


def test_synthetic_lifecycle_end_to_end_matches_a_replay(
    settings: Settings, cli: CliRunner
) -> None:
    """Open offers after new/resend/move/close, per cell, equal a local replay of the seed."""
    life = Lifecycle(resend_share=0.1, move_share=0.1, close_share=0.2)
    args = ["--resend-share", "0.1", "--move-share", "0.1", "--close-share", "0.2"]
    produce_and_run(settings, cli, "--synthetic", "--count", "3000", "--seed", "5", *args)

    places = load_places()
    country_of = {(p.latitude, p.longitude): p.country_code for p in places}
    open_offers: dict[str, Offer] = {}
    for record in islice(SyntheticStream(places, seed=5, lifecycle=life), 3000):
        if record.offer.op is Op.DELETE:
            del open_offers[record.offer.id]
        else:
            open_offers[record.offer.id] = record.offer
    expected: Counter[tuple[str, str]] = Counter()
    for offer in open_offers.values():
        continent = (
            continent_of(country_of[(offer.latitude, offer.longitude)])
            if offer.latitude is not None
            else UNKNOWN
        )
        expected[(offer.category or UNKNOWN, continent)] += 1

    result = breakdown(settings, cli)
    got = Counter({(c, k): n for c, row in result["counts"].items() for k, n in row.items() if n})
    assert got == expected
    assert result["total"] == len(open_offers)
    assert {k for _, k in got} >= set(CONTINENTS)  # every continent has open offers
    assert_verified(settings, cli)


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="public data set ../shared/data/wttj absent")
def test_public_data_end_to_end(settings: Settings, cli: CliRunner) -> None:
    source = (DATA_DIR / "SOURCE.md").read_text(encoding="utf-8")
    # The per-category totals as SOURCE.md states them (no profession → "Unknown").
    stated = "Business 1445, Tech 1439, Marketing / Comm' 782,\nRetail 536, Admin 411, Créa 212"
    assert stated in source and "Conseil 175, and no profession 69" in source
    expected_categories = {
        "Business": 1445,
        "Tech": 1439,
        "Marketing / Comm'": 782,
        "Retail": 536,
        "Admin": 411,
        "Créa": 212,
        "Conseil": 175,
        UNKNOWN: 69,
    }
    env = {"JOBPULSE_PROFESSIONS": str(DATA_DIR / "technical-test-professions.csv")}
    jobs = str(DATA_DIR / "technical-test-jobs.csv")

    produce_and_run(settings, cli, "--csv", jobs, **env)
    result = breakdown(settings, cli)
    counts = result["counts"]
    assert result["total"] == 5069
    assert {c: sum(row.values()) for c, row in nonzero(counts).items()} == expected_categories
    # SOURCE.md: both coordinates are empty in 43 rows.
    assert sum(row.get(UNKNOWN, 0) for row in counts.values()) == 43
    assert_verified(settings, cli)

    # Importing the same file again changes nothing.
    produce_and_run(settings, cli, "--csv", jobs, **env)
    assert nonzero(breakdown(settings, cli)["counts"]) == nonzero(counts)
    assert_verified(settings, cli)
