"""``jobpulse run|breakdown|verify``: help, bad arguments and missing services → one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CliRunner, one_error_line

from jobpulse.settings import Settings


@pytest.mark.parametrize("command", ["run", "breakdown", "verify"])
def test_every_command_has_help(cli: CliRunner, command: str) -> None:
    result = cli(Settings(), command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


@pytest.mark.parametrize("command", [("run", "--once"), ("breakdown",), ("verify",)])
def test_missing_redis_is_one_clear_line(cli: CliRunner, command: tuple[str, ...]) -> None:
    result = cli(Settings(redis_url="redis://127.0.0.1:1/0"), *command, timeout=60)
    assert result.returncode == 1
    assert "Redis is not reachable" in one_error_line(result)


@pytest.mark.integration
def test_missing_kafka_is_one_clear_line(cli: CliRunner, settings: Settings) -> None:
    broken = settings.with_overrides(kafka_bootstrap="127.0.0.1:1")
    for command in (("run", "--once"), ("verify",)):
        result = cli(broken, *command, timeout=60)
        assert result.returncode == 1
        assert "Kafka at 127.0.0.1:1 is not reachable" in one_error_line(result)


@pytest.mark.integration
def test_missing_topics_say_how_to_create_them(cli: CliRunner, settings: Settings) -> None:
    result = cli(settings.with_overrides(offers_topic="no-such-topic-here"), "run", "--once")
    assert result.returncode == 2
    assert "jobpulse topics create" in one_error_line(result)


def test_more_workers_than_state_shards_is_refused(cli: CliRunner) -> None:
    from jobpulse.dataflows.open_offers import SHARDS

    result = cli(Settings(), "run", "--once", "--workers", str(SHARDS + 1))
    assert result.returncode == 2
    assert f"more than the {SHARDS} state shards" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [("--workers", "0"), ("--processes", "zero"), ("--snapshot-interval", "0")],
)
def test_bad_arguments_exit_2(cli: CliRunner, args: tuple[str, ...]) -> None:
    result = cli(Settings(), "run", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_unreadable_professions_file_is_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = cli(Settings(professions=missing), "run", "--once", "--processes", "2")
    assert result.returncode == 2
    assert "cannot read the professions file" in one_error_line(result)


@pytest.mark.integration
def test_verify_with_kafka_down_prints_only_the_error_line(
    cli: CliRunner, settings: Settings
) -> None:
    result = cli(settings.with_overrides(kafka_bootstrap="127.0.0.1:1"), "verify", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no librdkafka log lines around it
    assert lines[0].startswith("jobpulse: Kafka at 127.0.0.1:1 is not reachable")


@pytest.mark.integration
@pytest.mark.partitions(2)
def test_run_without_professions_warns_once(cli: CliRunner, settings: Settings) -> None:
    assert settings.professions is None
    result = cli(settings, "run", "--once", "--processes", "2")
    assert result.returncode == 0, result.stderr
    warning = (
        "JOBPULSE_PROFESSIONS is not set: offers with only a profession_id count as "
        "category Unknown"
    )
    assert result.stderr.count(warning) == 1, result.stderr  # the launcher, not each child
