"""All jobpulse configuration, in one place.

Every setting is read from a ``JOBPULSE_*`` environment variable and can be overridden
by a CLI flag (the CLI passes overrides to :func:`load`). Nothing else in the project reads
the environment or repeats a topic name, URL or key prefix.

Kafka client settings for SASL/TLS pass straight through to every Kafka client:
``JOBPULSE_KAFKA__SECURITY__PROTOCOL=SASL_SSL`` becomes ``security.protocol=SASL_SSL``
(double underscore → dot, lower-cased), or give them all at once as a JSON object in
``JOBPULSE_KAFKA_CONFIG``. Redis credentials and TLS go in the URL
(``rediss://user:password@host:6380/0``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ENV_PREFIX = "JOBPULSE_"
KAFKA_PASSTHROUGH_PREFIX = "JOBPULSE_KAFKA__"


class SettingsError(ValueError):
    """A setting has a value jobpulse cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The resolved configuration. Field name ``x`` is environment variable ``JOBPULSE_X``."""

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    #: The seed's topic1: raw job offers, keyed by offer id.
    offers_topic: str = "jobpulse.offers"
    #: The seed's topic2: increment/decrement deltas.
    deltas_topic: str = "jobpulse.deltas"
    #: Malformed offers, byte-for-byte, with the reason in headers.
    dlq_topic: str = "jobpulse.offers.dlq"
    #: Partitions of the topics ``topics create`` makes, and recovery-store files of a new
    #: store (snapshot write parallelism). Not a cap on workers; grow the offers topic with
    #: ``jobpulse topics grow``.
    partitions: int = 12
    #: Every Redis key jobpulse writes starts with ``<prefix>:``.
    redis_prefix: str = "jobpulse"
    #: Local data, logs and pid files (git-ignored).
    state_dir: Path = Path(".jobpulse")
    #: Professions reference table (CSV ``id,name,category_name``), optional.
    professions: Path | None = None
    #: Tumbling event-time window length for opened/closed counts.
    window_seconds: int = 60
    #: How long (event time) a closed offer's tombstone keeps stale upserts from re-opening it.
    tombstone_seconds: int = 3600
    #: How often a live run checks whether the offers topic grew (then it restarts to read
    #: the new partitions).
    partition_check_seconds: int = 10
    #: Dashboard HTTP address and optional ``user:password`` basic auth.
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 5006
    dashboard_auth: str | None = None
    #: Extra librdkafka settings for every client (SASL/TLS ...).
    kafka_config: Mapping[str, str] = field(default_factory=dict)

    # -- derived values ---------------------------------------------------------------
    @property
    def kafka_brokers(self) -> list[str]:
        return [b.strip() for b in self.kafka_bootstrap.split(",") if b.strip()]

    @property
    def kafka_port(self) -> int:
        return _port_of(self.kafka_brokers[0], default=9092)

    @property
    def redis_port(self) -> int:
        return urlsplit(self.redis_url).port or 6379

    @property
    def redis_host(self) -> str:
        return urlsplit(self.redis_url).hostname or "localhost"

    @property
    def kafka_host(self) -> str:
        return self.kafka_brokers[0].rsplit(":", 1)[0]

    def kafka_client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for any client: bootstrap + pass-through + ``extra``."""
        return {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_config, **extra}

    def to_env(self) -> dict[str, str]:
        """These settings as the ``JOBPULSE_*`` variables :func:`load` reads back."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "kafka_config":
                if value:
                    env[ENV_PREFIX + "KAFKA_CONFIG"] = orjson.dumps(dict(value)).decode()
            elif value is not None:
                env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-``None`` overrides applied (what CLI flags do)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return _validated(dataclasses.replace(self, **given)) if given else self


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a child ``jobpulse`` process that must see exactly ``settings``.

    This process's environment minus every ``JOBPULSE_*`` variable (the pass-through ones
    included: they travel inside ``JOBPULSE_KAFKA_CONFIG``), plus ``settings`` and ``extra``.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, **settings.to_env(), **extra}


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``env`` (default: the process environment), then ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, type_name in _FIELD_TYPES.items():
        if name == "kafka_config":
            continue
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        values[name] = _convert(name, str(type_name), raw)
    values["kafka_config"] = _kafka_passthrough(env)
    settings = _validated(Settings(**values))
    return settings.with_overrides(**overrides)


def _convert(name: str, type_name: str, raw: str) -> Any:
    var = ENV_PREFIX + name.upper()
    if "int" in type_name:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{var} must be an integer, got {raw!r}") from None
    if "Path" in type_name:
        return Path(raw)
    return raw


def _kafka_passthrough(env: Mapping[str, str]) -> dict[str, str]:
    config: dict[str, str] = {}
    raw_json = env.get(ENV_PREFIX + "KAFKA_CONFIG")
    if raw_json:
        try:
            parsed = orjson.loads(raw_json)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(f"JOBPULSE_KAFKA_CONFIG is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise SettingsError("JOBPULSE_KAFKA_CONFIG must be a JSON object")
        config.update({str(k): str(v) for k, v in parsed.items()})
    for var, value in env.items():
        if var.startswith(KAFKA_PASSTHROUGH_PREFIX):
            key = var[len(KAFKA_PASSTHROUGH_PREFIX) :].lower().replace("__", ".")
            config[key] = value
    return config


def _validated(settings: Settings) -> Settings:
    if not 1 <= settings.partitions <= 1024:
        raise SettingsError(f"JOBPULSE_PARTITIONS must be 1..1024, got {settings.partitions}")
    if settings.window_seconds < 1:
        raise SettingsError(
            f"JOBPULSE_WINDOW_SECONDS must be at least 1, got {settings.window_seconds}"
        )
    if settings.tombstone_seconds < 0:
        raise SettingsError(
            f"JOBPULSE_TOMBSTONE_SECONDS must be 0 or more, got {settings.tombstone_seconds}"
        )
    if settings.partition_check_seconds < 1:
        raise SettingsError(
            "JOBPULSE_PARTITION_CHECK_SECONDS must be at least 1, got "
            f"{settings.partition_check_seconds}"
        )
    if not settings.kafka_brokers:
        raise SettingsError("JOBPULSE_KAFKA_BOOTSTRAP is empty")
    if urlsplit(settings.redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise SettingsError(
            f"JOBPULSE_REDIS_URL must start with redis://, rediss:// or unix://, "
            f"got {settings.redis_url!r}"
        )
    if ":" in settings.redis_prefix or not settings.redis_prefix:
        raise SettingsError("JOBPULSE_REDIS_PREFIX must be non-empty and contain no ':'")
    if settings.dashboard_auth is not None and ":" not in settings.dashboard_auth:
        raise SettingsError("JOBPULSE_DASHBOARD_AUTH must look like user:password")
    return settings


def _port_of(address: str, default: int) -> int:
    host_port = address.rsplit(":", 1)
    if len(host_port) == 2 and host_port[1].isdigit():
        return int(host_port[1])
    return default
