"""No secret is ever printed: URLs and configurations are shown with credentials masked.

Passwords are planted in ``JOBPULSE_REDIS_URL``, the librdkafka pass-through settings and
``JOBPULSE_DASHBOARD_AUTH``; the real CLI runs against a port where nothing listens, a real
Redis that refuses the password, and the real stack. Nothing planted may appear in stdout or
stderr, and the masked URL must (it is what tells the user which address is meant).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import free_port
from test_stack_auth import PasswordRedis, password_redis

from jobpulse import settings as settings_module
from jobpulse.settings import Settings, is_secret_key, mask_config, mask_url

if TYPE_CHECKING:
    from conftest import CliRunner

#: The Redis password planted in the URL.
PLANTED = "s3cr3t-planted-XYZ"
#: Secrets planted in the Kafka pass-through settings and the dashboard auth.
KAFKA_SECRETS = {
    "JOBPULSE_KAFKA__SASL__PASSWORD": "kafka-sasl-planted-1",
    "JOBPULSE_KAFKA__SSL__KEY__PASSWORD": "kafka-key-planted-2",
    "JOBPULSE_KAFKA__SASL__OAUTHBEARER__CLIENT__SECRET": "kafka-oauth-planted-3",
}
DASHBOARD_PASSWORD = "dashboard-planted-4"
EVERY_PLANTED = [PLANTED, DASHBOARD_PASSWORD, *KAFKA_SECRETS.values()]


def assert_nothing_planted(result: subprocess.CompletedProcess[str]) -> str:
    """Every planted secret is absent from the command's output; returns that output."""
    output = result.stdout + result.stderr
    for secret in EVERY_PLANTED:
        assert secret not in output, f"{secret!r} printed:\n{output}"
    return output


def planted_env() -> dict[str, str]:
    """The Kafka pass-through and dashboard secrets as environment variables."""
    return {**KAFKA_SECRETS, "JOBPULSE_DASHBOARD_AUTH": f"admin:{DASHBOARD_PASSWORD}"}


# -- the masking helpers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://default:{PLANTED}@localhost:6379/0", "redis://default:***@localhost:6379/0"),
        (f"rediss://:{PLANTED}@r.example:6380/1", "rediss://:***@r.example:6380/1"),
        (f"redis://u:{PLANTED}@[::1]:6379", "redis://u:***@[::1]:6379"),
        (f"redis://u:pa/ss@{PLANTED}@h:1/0", "redis://u:***@h:1/0"),  # '@' and '/' inside
        (f"redis://h:1/0?db=2&password={PLANTED}", "redis://h:1/0?db=2&password=***"),
        (f"unix://:{PLANTED}@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user@localhost:6379/0", "redis://user@localhost:6379/0"),
        ("localhost:9092,k2:9092", "localhost:9092,k2:9092"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "key",
    [
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "JOBPULSE_DASHBOARD_AUTH",
        "password",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["sasl.username", "sasl.mechanism", "security.protocol", "bootstrap.servers", "db"]
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_config_and_settings_are_shown_masked() -> None:
    env = {
        "JOBPULSE_REDIS_URL": f"redis://default:{PLANTED}@localhost:6379/0",
        "JOBPULSE_KAFKA__SASL__USERNAME": "svc",
        **planted_env(),
    }
    settings = settings_module.load(env=env)
    config = mask_config(settings.kafka_client_config())
    assert config["sasl.username"] == "svc" and config["sasl.password"] == "***"
    assert config["ssl.key.password"] == config["sasl.oauthbearer.client.secret"] == "***"
    redacted = settings.redacted()
    assert redacted["JOBPULSE_REDIS_URL"] == "redis://default:***@localhost:6379/0"
    assert redacted["JOBPULSE_DASHBOARD_AUTH"] == "admin:***"
    shown = [repr(settings), str(redacted), settings.redis_display]
    for text in shown:
        assert not any(secret in text for secret in EVERY_PLANTED), text
    # The real values are still there for the clients and for child processes.
    assert settings.to_env()["JOBPULSE_REDIS_URL"].endswith(f"{PLANTED}@localhost:6379/0")
    assert settings.kafka_client_config()["sasl.password"] == "kafka-sasl-planted-1"
    assert settings.scrub(f"failed: {PLANTED} / kafka-key-planted-2") == "failed: *** / ***"


# -- the real CLI --------------------------------------------------------------------------
@pytest.fixture
def wrong_password_redis(tmp_path: Path) -> Iterator[PasswordRedis]:
    """A real Redis that requires a password the URLs below do not have."""
    with password_redis(tmp_path / "password-redis") as server:
        yield server


COMMANDS = [("stack", "status"), ("breakdown",), ("verify",), ("run", "--once")]


@pytest.mark.integration
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_nothing_planted_is_printed_when_redis_is_unreachable(
    settings: Settings, cli: CliRunner, command: tuple[str, ...]
) -> None:
    port = free_port()
    planted = settings.with_overrides(redis_url=f"redis://default:{PLANTED}@localhost:{port}/0")
    result = cli(planted, *command, env=planted_env())
    assert result.returncode != 0
    output = assert_nothing_planted(result)
    assert f"redis://default:***@localhost:{port}/0" in output


@pytest.mark.integration
@pytest.mark.parametrize("command", [*COMMANDS, ("stack", "up")], ids=" ".join)
def test_nothing_planted_is_printed_when_redis_refuses_the_password(
    settings: Settings,
    wrong_password_redis: PasswordRedis,
    cli: CliRunner,
    command: tuple[str, ...],
) -> None:
    planted = settings.with_overrides(redis_url=wrong_password_redis.url(PLANTED))
    result = cli(planted, *command, env=planted_env())
    assert result.returncode != 0
    output = assert_nothing_planted(result)
    assert wrong_password_redis.masked() in output


@pytest.mark.integration
def test_stack_up_status_down_show_the_url_masked(settings: Settings, cli: CliRunner) -> None:
    """``stack up`` starts a private Redis for a URL with a password (Redis accepts any
    password for its password-less default user); every line shows the URL masked."""
    port = free_port()
    planted = settings.with_overrides(redis_url=f"redis://default:{PLANTED}@localhost:{port}/0")
    masked = f"redis://default:***@localhost:{port}/0"
    env = planted_env()
    try:
        up = cli(planted, "stack", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert masked in assert_nothing_planted(up)
        status = cli(planted, "stack", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert masked in assert_nothing_planted(status)
    finally:
        down = cli(planted, "stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert_nothing_planted(down)


@pytest.mark.integration
def test_a_run_logs_its_redis_url_masked(settings: Settings, cli: CliRunner) -> None:
    """The real stack (its Redis takes any password for the default user): the run works
    and its log names the Redis URL, masked."""
    if "@" in settings.redis_url:
        pytest.skip("the configured Redis URL already has credentials")
    planted = settings.with_overrides(
        redis_url=settings.redis_url.replace("redis://", f"redis://default:{PLANTED}@", 1)
    )
    result = cli(planted, "run", "--once", env=planted_env())
    assert result.returncode == 0, result.stderr
    output = assert_nothing_planted(result)
    assert mask_url(planted.redis_url) in output


@pytest.mark.integration
def test_a_bad_redis_url_is_reported_masked(settings: Settings, cli: CliRunner) -> None:
    result = cli(settings, "breakdown", env={"JOBPULSE_REDIS_URL": f"http://u:{PLANTED}@x/0"})
    assert result.returncode == 2
    assert "http://u:***@x/0" in assert_nothing_planted(result)
