"""All jobpulse configuration, in one place.

Every setting is read from a ``JOBPULSE_*`` environment variable and can be overridden
by a CLI flag (the CLI passes overrides to :func:`load`). Nothing else in the project reads
the environment or repeats a topic name, URL or key prefix.

Kafka client settings for SASL/TLS pass straight through to every Kafka client:
``JOBPULSE_KAFKA__SECURITY__PROTOCOL=SASL_SSL`` becomes ``security.protocol=SASL_SSL``
(double underscore → dot, lower-cased), or give them all at once as a JSON object in
``JOBPULSE_KAFKA_CONFIG``. Redis credentials and TLS go in the URL
(``rediss://user:password@host:6380/0``).

Secrets never leave this module unmasked for display: whatever shows a URL or a configuration
to a user or a log uses :func:`mask_url`, :func:`mask_config`, :meth:`Settings.redacted`,
the ``*_display`` properties or :meth:`Settings.scrub` (``repr(settings)`` is masked too).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

ENV_PREFIX = "JOBPULSE_"
KAFKA_PASSTHROUGH_PREFIX = "JOBPULSE_KAFKA__"
#: What a secret is shown as.
MASK = "***"
#: Secrets shorter than this are not searched for in free text by :meth:`Settings.scrub`
#: (replacing every "a" of a message would make it unreadable); they are still masked
#: wherever they appear as a URL password or a secret setting.
MIN_SCRUB_LENGTH = 4


class SettingsError(ValueError):
    """A setting has a value jobpulse cannot use; the message names the variable."""


@dataclass(frozen=True, repr=False)
class Settings:
    """The resolved configuration. Field name ``x`` is environment variable ``JOBPULSE_X``.

    ``repr`` masks the secrets (see :meth:`redacted`); ``to_env`` does not (child processes
    need them).
    """

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
    #: How long the dataflow waits out a Redis or Kafka outage (with backoff) before it stops.
    outage_limit_seconds: int = 300
    #: How often the dataflow rewrites its whole view in Redis (heals lost or stale keys).
    view_refresh_seconds: int = 5
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

    # -- what may be shown (logs, messages, status lines) -------------------------------
    @property
    def redis_display(self) -> str:
        """The Redis URL as it may be shown: its password masked."""
        return mask_url(self.redis_url)

    @property
    def kafka_display(self) -> str:
        """The Kafka bootstrap servers as they may be shown (any ``user:pw@`` masked)."""
        return mask_url(self.kafka_bootstrap)

    @property
    def redis_address(self) -> str:
        """``host:port`` of the Redis URL (the socket path of a ``unix://`` URL)."""
        parts = urlsplit(self.redis_url)
        if parts.scheme == "unix":
            return parts.path
        host = self.redis_host
        return f"[{host}]:{self.redis_port}" if ":" in host else f"{host}:{self.redis_port}"

    @property
    def redis_username(self) -> str:
        """The Redis user the URL authenticates as (``default`` when it names none)."""
        parts = urlsplit(self.redis_url)
        query = dict(parse_qsl(parts.query))
        return unquote(parts.username or "") or query.get("username") or "default"

    @property
    def redis_password_given(self) -> bool:
        """Whether the Redis URL carries a password (in its user info or query string)."""
        parts = urlsplit(self.redis_url)
        return parts.password is not None or "password" in dict(parse_qsl(parts.query))

    def redacted(self) -> dict[str, str]:
        """:meth:`to_env` with every secret masked: the configuration as it may be logged."""
        shown: dict[str, str] = {}
        for var, value in self.to_env().items():
            if var == ENV_PREFIX + "KAFKA_CONFIG":
                shown[var] = orjson.dumps(mask_config(self.kafka_config)).decode()
            elif var == ENV_PREFIX + "DASHBOARD_AUTH":
                shown[var] = _mask_user_password(value)
            elif is_secret_key(var):
                shown[var] = MASK
            else:
                shown[var] = mask_url(value)
        return shown

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold (for :meth:`scrub`), longest first."""
        found: set[str] = set()
        parts = urlsplit(self.redis_url)
        if parts.password:
            found.update({parts.password, unquote(parts.password)})
        found.update(v for k, v in parse_qsl(parts.query) if is_secret_key(k))
        if self.dashboard_auth:
            found.add(self.dashboard_auth.split(":", 1)[1])
        found.update(str(v) for k, v in self.kafka_config.items() if is_secret_key(k))
        return tuple(sorted((s for s in found if s), key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with every secret of these settings masked: for messages that quote
        another library's error text, which jobpulse does not control."""
        for secret in self.secrets:
            if len(secret) >= MIN_SCRUB_LENGTH:
                text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", text)

    def __repr__(self) -> str:
        shown = {
            "redis_url": self.redis_display,
            "kafka_bootstrap": self.kafka_display,
            "dashboard_auth": (
                _mask_user_password(self.dashboard_auth) if self.dashboard_auth else None
            ),
            "kafka_config": mask_config(self.kafka_config),
        }
        fields = ", ".join(
            f"{f.name}={shown.get(f.name, getattr(self, f.name))!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({fields})"

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
    for name in ("outage_limit_seconds", "view_refresh_seconds"):
        if getattr(settings, name) < 1:
            raise SettingsError(
                f"JOBPULSE_{name.upper()} must be at least 1, got {getattr(settings, name)}"
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
            f"got {settings.redis_display!r}"
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


# -- masking: the one place that decides what of a URL or a configuration may be shown --------

#: A setting name part that marks its value as secret (``sasl.password``, ``ssl.key.pem``,
#: ``sasl.oauthbearer.client.secret``, ``JOBPULSE_DASHBOARD_AUTH`` ...).
_SECRET_PART = re.compile(
    r"^(pass.*|.*password.*|pwd|.*secret.*|.*token.*|.*credential.*|key.*|apikey|auth|jaas)$"
)
#: The password of a URL inside free text (greedy up to the last ``@`` before a blank).
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*):\S*@", re.IGNORECASE)
#: Whole setting names whose value embeds secrets although no part of the name says so.
_SECRET_NAMES = frozenset({"sasl.oauthbearer.config"})


def is_secret_key(name: str) -> bool:
    """Whether a setting named ``name`` (librdkafka key, env variable, URL query argument)
    holds a secret: any part (split at ``.``, ``_``, ``-``) like password, secret, token,
    credential, key…, auth."""
    lowered = name.lower()
    if lowered in _SECRET_NAMES:
        return True
    return any(_SECRET_PART.match(part) for part in re.split(r"[._\-]+", lowered) if part)


def mask_url(url: str) -> str:
    """``url`` with its password and secret query arguments masked, the rest unchanged.

    ``redis://default:secret@localhost:6379/0`` → ``redis://default:***@localhost:6379/0``;
    ``redis://h:6379/0?password=x`` → ``redis://h:6379/0?password=***``. Also works on
    ``user:pw@host:port`` without a scheme. Everything between the first ``:`` of the user
    info and the last ``@`` before the query is masked, so a password containing ``@`` or
    ``/`` does not leak either.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, query_sep, query = _split_query(rest)
    if "@" in head:
        userinfo, host = head.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        head = f"{userinfo}@{host}"
    if query_sep == "?":
        query = _mask_query(query)
    return f"{scheme}{sep}{head}{query_sep}{query}"


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client configuration (e.g. librdkafka's) that may be shown: secret keys'
    values replaced by ``***``, and passwords inside URL-like values masked."""
    return {
        key: MASK if is_secret_key(key) else (mask_url(value) if isinstance(value, str) else value)
        for key, value in config.items()
    }


def _split_query(rest: str) -> tuple[str, str, str]:
    """``rest`` split before its query string or fragment: (head, separator, tail)."""
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return rest, "", ""
    return rest[:cut], rest[cut], rest[cut + 1 :]


def _mask_query(query: str) -> str:
    """A query string with the values of secret arguments (``password=…``) masked."""

    def mask(match: re.Match[str]) -> str:
        name = unquote(match.group(1))
        return f"{match.group(1)}={MASK}" if is_secret_key(name) else match.group(0)

    return re.sub(r"([^&=#]+)=([^&#]*)", mask, query)


def _mask_user_password(value: str) -> str:
    """``user:password`` → ``user:***``."""
    user, sep, _ = value.partition(":")
    return f"{user}{sep}{MASK}" if sep else MASK
