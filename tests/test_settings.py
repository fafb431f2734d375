"""Settings come from JOBPULSE_* variables and CLI flags override them, end to end."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
import typer

from jobpulse import settings as settings_module
from jobpulse import topics
from jobpulse.settings import Settings, SettingsError

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


def test_every_kafka_client_connects_eagerly_unless_the_user_says_otherwise() -> None:
    from jobpulse import kafka

    # Sparse connections put a ≈ 50 ms connection timer before each client's first answer.
    config = kafka.client_config(settings_module.load(env={}), tunables={"linger.ms": 20})
    assert config["enable.sparse.connections"] is False and config["linger.ms"] == 20
    # A pass-through setting overrides a tunable; a required setting overrides both.
    user = settings_module.load(env={"JOBPULSE_KAFKA__ENABLE__SPARSE__CONNECTIONS": "true"})
    assert kafka.client_config(user)["enable.sparse.connections"] == "true"
    forced = kafka.client_config(user, required={"enable.sparse.connections": False})
    assert forced["enable.sparse.connections"] is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBPULSE_PARTITIONS": "twelve"}, "JOBPULSE_PARTITIONS must be an integer"),
        ({"JOBPULSE_PARTITIONS": "0"}, "JOBPULSE_PARTITIONS must be 1..1024"),
        ({"JOBPULSE_REDIS_URL": "http://x"}, "JOBPULSE_REDIS_URL must start with"),
        ({"JOBPULSE_REDIS_PREFIX": "a:b"}, "JOBPULSE_REDIS_PREFIX"),
        ({"JOBPULSE_KAFKA_CONFIG": "[1]"}, "JOBPULSE_KAFKA_CONFIG must be a JSON object"),
        ({"JOBPULSE_PARTITIONS": "2000"}, "JOBPULSE_PARTITIONS must be 1..1024, got 2000"),
        ({"JOBPULSE_WINDOW_SECONDS": "0"}, "JOBPULSE_WINDOW_SECONDS must be at least 1, got 0"),
        ({"JOBPULSE_TOMBSTONE_SECONDS": "-1"}, "JOBPULSE_TOMBSTONE_SECONDS must be 0 or more"),
        ({"JOBPULSE_PARTITION_CHECK_SECONDS": "0"}, "JOBPULSE_PARTITION_CHECK_SECONDS must be at"),
        ({"JOBPULSE_OUTAGE_LIMIT_SECONDS": "0"}, "JOBPULSE_OUTAGE_LIMIT_SECONDS must be at least"),
        ({"JOBPULSE_VIEW_REFRESH_SECONDS": "x"}, "JOBPULSE_VIEW_REFRESH_SECONDS must be an int"),
        ({"JOBPULSE_DASHBOARD_PORT": "http"}, "JOBPULSE_DASHBOARD_PORT must be an integer"),
        ({"JOBPULSE_KAFKA_BOOTSTRAP": " , "}, "JOBPULSE_KAFKA_BOOTSTRAP is empty"),
        ({"JOBPULSE_DASHBOARD_AUTH": "admin"}, "JOBPULSE_DASHBOARD_AUTH must look like user:pass"),
        ({"JOBPULSE_KAFKA_CONFIG": "{nope"}, "JOBPULSE_KAFKA_CONFIG is not valid JSON: "),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        settings_module.load(env=env)
    assert "\n" not in str(caught.value)  # one line, never pydantic's own report
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_bad_redis_url_is_shown_masked() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_module.load(env={"JOBPULSE_REDIS_URL": "http://u:hunter22@x"})
    assert str(caught.value) == (
        "JOBPULSE_REDIS_URL must start with redis://, rediss:// or unix://, got 'http://u:***@x'"
    )


def test_overrides_are_checked_like_the_environment() -> None:
    base = settings_module.load(env={})
    with pytest.raises(SettingsError, match=r"^JOBPULSE_PARTITIONS must be 1\.\.1024, got 0$"):
        base.with_overrides(partitions=0)
    with pytest.raises(SettingsError, match=r"^JOBPULSE_REDIS_PREFIX must be non-empty"):
        settings_module.load(env={}, redis_prefix="")


def test_empty_variables_are_unset() -> None:
    env = {f"JOBPULSE_{name.upper()}": "" for name in Settings.model_fields}
    assert settings_module.load(env=env) == Settings() == settings_module.load(env={})


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBPULSE_PARTITIONS", "9")
    monkeypatch.setenv("JOBPULSE_KAFKA__CLIENT__ID", "from-os")
    assert settings_module.load().partitions == 9
    assert settings_module.load().kafka_config == {"client.id": "from-os"}
    assert settings_module.load(env={}) == Settings()
    # Constructing or copying Settings never reads the process environment either.
    assert Settings().partitions == 12
    assert Settings().with_overrides(window_seconds=5).kafka_config == {}


def test_kafka_config_json_values_become_strings_and_pass_through_wins() -> None:
    env = {
        "JOBPULSE_KAFKA_CONFIG": orjson.dumps({"linger.ms": 5, "sasl.mechanism": "PLAIN"}).decode(),
        "JOBPULSE_KAFKA__SASL__MECHANISM": "SCRAM-SHA-256",
    }
    config = settings_module.load(env=env).kafka_config
    assert config == {"linger.ms": "5", "sasl.mechanism": "SCRAM-SHA-256"}


def test_settings_are_immutable_and_hashable() -> None:
    s = settings_module.load(env={"JOBPULSE_KAFKA__SASL__MECHANISM": "PLAIN"})
    with pytest.raises(ValueError, match="frozen"):
        s.partitions = 3  # type: ignore[misc]
    assert hash(s) == hash(settings_module.load(env=s.to_env()))
    assert len({s, s.with_overrides(partitions=12), s.with_overrides(partitions=3)}) == 2


def test_global_flags_are_the_settings_marked_as_flags() -> None:
    from jobpulse.cli.main import app

    command = typer.main.get_command(app)
    flags = {p.name: p.opts for p in command.params if p.name in Settings.model_fields}
    expected = {n: [f"--{n.replace('_', '-')}"] for n in settings_module.flag_fields()}
    assert flags == expected
    assert "partitions" in flags and "tombstone_seconds" not in flags
    helps = {p.name: getattr(p, "help", "") for p in command.params}
    assert helps["partitions"] == (
        f"{Settings.model_fields['partitions'].description} (env JOBPULSE_PARTITIONS)"
    )


def test_readme_settings_table_matches_the_model() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`JOBPULSE_") and "<" not in cells[0]:
            rows[cells[0].strip("`")] = cells[1:3]
    assert set(rows) == {settings_module.env_var(n) for n in Settings.model_fields}
    flags = settings_module.flag_fields()
    for name, field in Settings.model_fields.items():
        flag, default = rows[settings_module.env_var(name)]
        assert flag == (f"`--{name.replace('_', '-')}`" if name in flags else ""), name
        value = field.get_default(call_default_factory=True)
        if value is None:
            assert default.startswith("(none"), name
        else:
            shown = orjson.dumps(dict(value)).decode() if isinstance(value, Mapping) else value
            assert default == f"`{shown}`", name


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
