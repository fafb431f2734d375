"""Settings come from JOBPULSE_* variables and CLI flags override them, end to end."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from jobpulse import settings as settings_module
from jobpulse.settings import Settings, SettingsError
from jobpulse.stack import topics

if TYPE_CHECKING:
    from conftest import CliRunner


def test_defaults() -> None:
    s = settings_module.load(env={})
    assert (s.kafka_bootstrap, s.redis_url) == ("localhost:9092", "redis://localhost:6379/0")
    assert (s.partitions, s.redis_prefix, s.state_dir) == (12, "jobpulse", Path(".jobpulse"))
    assert (s.kafka_port, s.redis_port, s.kafka_host, s.redis_host) == (
        9092,
        6379,
        "localhost",
        "localhost",
    )


def test_every_variable_is_read_from_the_environment() -> None:
    env = {
        "JOBPULSE_KAFKA_BOOTSTRAP": "k1:19092,k2:19092",
        "JOBPULSE_REDIS_URL": "redis://r:16379/2",
        "JOBPULSE_OFFERS_TOPIC": "o",
        "JOBPULSE_DELTAS_TOPIC": "d",
        "JOBPULSE_DLQ_TOPIC": "q",
        "JOBPULSE_PARTITIONS": "7",
        "JOBPULSE_REDIS_PREFIX": "px",
        "JOBPULSE_STATE_DIR": "/tmp/somewhere",
    }
    s = settings_module.load(env=env)
    assert s.kafka_brokers == ["k1:19092", "k2:19092"]
    assert (s.kafka_port, s.redis_port, s.redis_host) == (19092, 16379, "r")
    assert (s.offers_topic, s.deltas_topic, s.dlq_topic) == ("o", "d", "q")
    assert (s.partitions, s.redis_prefix, s.state_dir) == (7, "px", Path("/tmp/somewhere"))


def test_overrides_win_over_environment() -> None:
    s = settings_module.load(env={"JOBPULSE_PARTITIONS": "7"}, partitions=3, redis_prefix=None)
    assert s.partitions == 3 and s.redis_prefix == "jobpulse"


def test_kafka_client_settings_pass_through() -> None:
    env = {
        "JOBPULSE_KAFKA__SASL__MECHANISM": "SCRAM-SHA-512",
        "JOBPULSE_KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        "JOBPULSE_KAFKA_CONFIG": orjson.dumps({"sasl.username": "u", "client.id": "x"}).decode(),
    }
    config = settings_module.load(env=env).kafka_client_config(**{"group.id": "g"})
    assert config == {
        "bootstrap.servers": "localhost:9092",
        "sasl.mechanism": "SCRAM-SHA-512",
        "security.protocol": "SASL_SSL",
        "sasl.username": "u",
        "client.id": "x",
        "group.id": "g",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBPULSE_PARTITIONS": "twelve"}, "JOBPULSE_PARTITIONS must be an integer"),
        ({"JOBPULSE_PARTITIONS": "0"}, "JOBPULSE_PARTITIONS must be 1..1024"),
        ({"JOBPULSE_REDIS_URL": "http://x"}, "JOBPULSE_REDIS_URL must start with"),
        ({"JOBPULSE_REDIS_PREFIX": "a:b"}, "JOBPULSE_REDIS_PREFIX"),
        ({"JOBPULSE_KAFKA_CONFIG": "[1]"}, "JOBPULSE_KAFKA_CONFIG must be a JSON object"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_module.load(env=env)


def test_bad_partitions_via_cli_is_one_line_and_exit_2(cli: CliRunner) -> None:
    base = settings_module.load(env={})
    result = cli(base, "topics", "create", env={"JOBPULSE_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip() == "jobpulse: JOBPULSE_PARTITIONS must be an integer, got 'lots'"


def test_bad_partitions_flag_exit_2(cli: CliRunner) -> None:
    result = cli(settings_module.load(env={}), "--partitions", "0", "stack", "status")
    assert result.returncode == 2
    assert "JOBPULSE_PARTITIONS must be 1..1024" in result.stderr
    assert "Traceback" not in result.stderr


def test_flags_override_environment_end_to_end(stack: Settings, cli: CliRunner) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    from_env = stack.with_overrides(
        offers_topic=f"{tag}.offers", deltas_topic=f"{tag}.deltas", dlq_topic=f"{tag}.dlq"
    )
    names = topics.project_topics(from_env)
    try:
        result = cli(
            from_env.with_overrides(partitions=7),  # JOBPULSE_PARTITIONS=7 in the environment
            "--partitions",
            "2",
            "--dlq-topic",
            f"{tag}.flagged-dlq",
            "topics",
            "create",
        )
        assert result.returncode == 0, result.stderr
        created = topics.topic_partitions(from_env, [*names, f"{tag}.flagged-dlq"])
        assert created == {f"{tag}.offers": 2, f"{tag}.deltas": 2, f"{tag}.flagged-dlq": 2}
    finally:
        topics.delete_topics(from_env, [*names, f"{tag}.flagged-dlq"])


def test_environment_is_honoured_end_to_end(stack: Settings, cli: CliRunner) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    s = stack.with_overrides(
        offers_topic=f"{tag}.offers",
        deltas_topic=f"{tag}.deltas",
        dlq_topic=f"{tag}.dlq",
        partitions=5,
    )
    names = topics.project_topics(s)
    try:
        result = cli(s, "topics", "create")
        assert result.returncode == 0, result.stderr
        assert topics.topic_partitions(s, names) == dict.fromkeys(names, 5)
    finally:
        topics.delete_topics(s, names)


def test_kafka_passthrough_reaches_the_client(stack: Settings, cli: CliRunner) -> None:
    result = cli(stack, "topics", "create", env={"JOBPULSE_KAFKA__SECURITY__PROTOCOL": "bogus"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert 'Invalid value "bogus" for configuration property "security.protocol"' in result.stderr


def test_status_reports_the_addresses_from_flags(cli: CliRunner, tmp_path: Path) -> None:
    result = cli(
        settings_module.load(env={}),
        "--kafka-bootstrap",
        "localhost:1",
        "--redis-url",
        "redis://localhost:2/0",
        "--state-dir",
        str(tmp_path),
        "stack",
        "status",
    )
    assert result.returncode == 3
    assert "localhost:1" in result.stdout and "redis://localhost:2/0" in result.stdout
    assert result.stdout.count(" down ") == 2


def test_settings_round_trip_through_the_environment_of_a_child() -> None:
    original = settings_module.load(
        env={
            "JOBPULSE_PARTITIONS": "5",
            "JOBPULSE_PROFESSIONS": "data/professions.csv",
            "JOBPULSE_DASHBOARD_AUTH": "ann:secret",
            "JOBPULSE_KAFKA__SASL__MECHANISM": "PLAIN",
        }
    )
    assert settings_module.load(env=original.to_env()) == original
    child = settings_module.child_env(original, EXTRA="1")
    assert settings_module.load(env=child) == original
    assert child["EXTRA"] == "1"
    assert not any(k.startswith("JOBPULSE_KAFKA__") for k in child)
