"""All jobpulse configuration, in one place.

Every setting is a field of :class:`Settings` (a pydantic-settings model): read from a
``JOBPULSE_*`` environment variable by :func:`load`, and — for the fields marked
:data:`CLI_FLAG` — overridable by a global CLI flag (the CLI passes overrides to :func:`load`).
Nothing else in the project reads the environment or repeats a topic name, URL or key prefix.
A bad value is a :class:`SettingsError` of one line naming the variable.

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

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import pydantic_settings
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "JOBPULSE_"
KAFKA_PASSTHROUGH_PREFIX = "JOBPULSE_KAFKA__"
#: What a secret is shown as.
MASK = "***"
#: Secrets shorter than this are not searched for in free text by :meth:`Settings.scrub`
#: (replacing every "a" of a message would make it unreadable); they are still masked
#: wherever they appear as a URL password or a secret setting.
MIN_SCRUB_LENGTH = 4
#: The values of ``JOBPULSE_LOG_FORMAT`` (``--log-format``).
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """A setting has a value jobpulse cannot use; the message names the variable."""


class _CliFlag:
    def __repr__(self) -> str:
        return "CLI_FLAG"


#: Marks a field (in its ``Annotated`` metadata) that is also a global ``jobpulse`` flag,
#: ``--<field-name-with-dashes>``, whose help is the field's description.
CLI_FLAG = _CliFlag()


def env_var(name: str) -> str:
    """The variable of setting ``name``: ``partitions`` → ``JOBPULSE_PARTITIONS``."""
    return ENV_PREFIX + name.upper()


class Settings(BaseSettings):
    """The resolved configuration. Field name ``x`` is environment variable ``JOBPULSE_X``.

    Immutable and hashable. ``Settings(...)`` is its arguments over the defaults; only
    :func:`load` reads an environment. ``repr`` masks the secrets (see :meth:`redacted`);
    ``to_env`` does not (child processes need them).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # JOBPULSE_KAFKA__SASL__MECHANISM → {"sasl": {"mechanism": …}} → "sasl.mechanism".
        env_nested_delimiter="__",
        # The prefix applies to the alias "kafka" of kafka_config too (JOBPULSE_KAFKA__…).
        env_prefix_target="all",
        # An empty variable is an unset one.
        env_ignore_empty=True,
        validate_by_name=True,
        frozen=True,
        extra="forbid",
    )

    kafka_bootstrap: Annotated[str, CLI_FLAG] = Field(
        "localhost:9092", description="Kafka bootstrap servers (comma-separated)."
    )
    redis_url: Annotated[str, CLI_FLAG] = Field(
        "redis://localhost:6379/0", description="Redis URL; credentials and TLS go here."
    )
    offers_topic: Annotated[str, CLI_FLAG] = Field(
        "jobpulse.offers", description="Offers topic (topic1): raw job offers, keyed by offer id."
    )
    deltas_topic: Annotated[str, CLI_FLAG] = Field(
        "jobpulse.deltas", description="Deltas topic (topic2): increment/decrement deltas."
    )
    dlq_topic: Annotated[str, CLI_FLAG] = Field(
        "jobpulse.offers.dlq", description="Dead-letter topic: malformed offers, byte for byte."
    )
    rows_topic: Annotated[str | None, CLI_FLAG] = Field(
        None,
        description="Offer-rows topic: every valid offer as enriched by the dataflow, for the "
        "PostgreSQL sink; unset = not written.",
    )
    postgres_url: Annotated[str, CLI_FLAG] = Field(
        "postgresql://jobpulse@localhost:5432/jobpulse",
        description="PostgreSQL URL of the offers sink; credentials and TLS go here.",
    )
    #: Also the recovery-store files of a new store (snapshot write parallelism). Not a cap on
    #: workers; grow the offers topic with ``jobpulse topics grow``.
    partitions: Annotated[int, CLI_FLAG] = Field(
        12, ge=1, le=1024, description="Partitions of the topics `topics create` makes."
    )
    redis_prefix: Annotated[str, CLI_FLAG] = Field(
        "jobpulse", description="Redis key prefix: every key jobpulse writes starts with it."
    )
    state_dir: Annotated[Path, CLI_FLAG] = Field(
        Path(".jobpulse"), description="Local data, logs and pid files (git-ignored)."
    )
    professions: Annotated[Path | None, CLI_FLAG] = Field(
        None, description="Professions reference table, CSV id,name,category_name."
    )
    window_seconds: Annotated[int, CLI_FLAG] = Field(
        60, ge=1, description="Tumbling event-time window for opened/closed counts, s."
    )
    tombstone_seconds: int = Field(
        3600, ge=0, description="How long (event time) a closed offer ignores stale upserts, s."
    )
    partition_check_seconds: int = Field(
        10, ge=1, description="How often a live run checks whether the offers topic grew, s."
    )
    outage_limit_seconds: int = Field(
        300, ge=1, description="How long the dataflow waits out a Redis or Kafka outage, s."
    )
    view_refresh_seconds: int = Field(
        5, ge=1, description="How often the dataflow rewrites its whole view in Redis, s."
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard HTTP address.")
    dashboard_port: int = Field(5006, description="Dashboard HTTP port.")
    dashboard_auth: str | None = Field(
        None, description="user:password basic auth for the dashboard."
    )
    #: Several dashboard replicas behind one Service must share it: a login cookie signed by
    #: one replica is then accepted by the next (the websocket may land on another pod).
    dashboard_cookie_secret: str | None = Field(
        None,
        description="Key that signs the dashboard's login cookies; the same for every replica "
        "(unset: random per server process).",
    )
    dashboard_origins: str | None = Field(
        None,
        description="Comma-separated host[:port] allowed to open the dashboard's websocket, "
        "e.g. its public name behind an Ingress (unset: the listening address; any origin "
        "when listening on all interfaces).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint of run, sink and dashboard; "
        "unset = none. Process i of a local cluster or a forked dashboard uses port + i.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the /metrics endpoint.")
    progress_seconds: int = Field(
        10, ge=1, description="Seconds between two plain progress lines (not on a terminal)."
    )
    log_format: str = Field(
        "text", description="Log lines of run, sink and dashboard: text or json (one object)."
    )
    dashboard_url: str | None = Field(
        None,
        description="Where `jobpulse status` checks the dashboard (GET <url>/healthz); unset: "
        "the local dashboard port, informational only.",
    )
    kafka_config: Mapping[str, str] = Field(
        default_factory=dict,
        # Read from JOBPULSE_KAFKA_CONFIG (JSON, by field name) and JOBPULSE_KAFKA__* (alias).
        validation_alias="kafka",
        description="Extra librdkafka settings for every client (SASL/TLS ...).",
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, **_other_sources: Any
    ) -> tuple[Any, ...]:
        # Constructing Settings never reads os.environ: load() hands the environment it is
        # given to _Environment itself, so with_overrides() cannot pick up stray variables.
        return (init_settings,)

    # -- validation: a ValueError's text follows the variable's name in the SettingsError ----
    @field_validator("kafka_bootstrap")
    @classmethod
    def _some_broker(cls, value: str) -> str:
        if not _brokers(value):
            raise ValueError("is empty")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"must start with redis://, rediss:// or unix://, got {mask_url(value)!r}"
            )
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _one_key_segment(cls, value: str) -> str:
        if ":" in value or not value:
            raise ValueError("must be non-empty and contain no ':'")
        return value

    @field_validator("dashboard_auth")
    @classmethod
    def _user_password(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("must look like user:password")
        return value

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in LOG_FORMATS:
            raise ValueError(f"must be {' or '.join(LOG_FORMATS)}, got {value!r}")
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError(f"must start with http:// or https://, got {mask_url(value)!r}")
        return value

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _dotted_keys(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("must be a JSON object")
        return _dotted(value)

    # -- derived values ---------------------------------------------------------------
    @property
    def kafka_brokers(self) -> list[str]:
        return _brokers(self.kafka_bootstrap)

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
        for url in (self.redis_url, self.postgres_url, self.dashboard_url or ""):
            parts = urlsplit(url)
            if parts.password:
                found.update({parts.password, unquote(parts.password)})
            found.update(v for k, v in parse_qsl(parts.query) if is_secret_key(k))
        if self.dashboard_auth:
            found.add(self.dashboard_auth.split(":", 1)[1])
        if self.dashboard_cookie_secret:
            found.add(self.dashboard_cookie_secret)
        found.update(str(v) for k, v in self.kafka_config.items() if is_secret_key(k))
        return tuple(sorted((s for s in found if s), key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with every secret of these settings masked: for messages that quote
        another library's error text, which jobpulse does not control."""
        for secret in self.secrets:
            if len(secret) >= MIN_SCRUB_LENGTH:
                text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", text)

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        """What ``repr``, ``str`` and rich show: every field, the secrets masked."""
        shown = {
            "redis_url": self.redis_display,
            "postgres_url": mask_url(self.postgres_url),
            "dashboard_url": mask_url(self.dashboard_url) if self.dashboard_url else None,
            "kafka_bootstrap": self.kafka_display,
            "dashboard_auth": (
                _mask_user_password(self.dashboard_auth) if self.dashboard_auth else None
            ),
            "dashboard_cookie_secret": MASK if self.dashboard_cookie_secret else None,
            "kafka_config": mask_config(self.kafka_config),
        }
        for name in type(self).model_fields:
            yield name, shown.get(name, getattr(self, name))

    def __hash__(self) -> int:
        return hash(tuple(self.to_env().items()))

    def kafka_client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for any client: bootstrap + pass-through + ``extra``."""
        return {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_config, **extra}

    def to_env(self) -> dict[str, str]:
        """These settings as the ``JOBPULSE_*`` variables :func:`load` reads back."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "kafka_config":
                if value:
                    env[env_var(name)] = orjson.dumps(dict(value)).decode()
            elif value is not None:
                env[env_var(name)] = str(value)
        return env

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-``None`` overrides applied (what CLI flags do)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return _validated({**self.model_dump(), **given}) if given else self


def flag_fields() -> dict[str, FieldInfo]:
    """The settings that are also global CLI flags (marked :data:`CLI_FLAG`), in field order."""
    return {n: f for n, f in Settings.model_fields.items() if CLI_FLAG in f.metadata}


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a child ``jobpulse`` process that must see exactly ``settings``.

    This process's environment minus every ``JOBPULSE_*`` variable (the pass-through ones
    included: they travel inside ``JOBPULSE_KAFKA_CONFIG``), plus ``settings`` and ``extra``.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, **settings.to_env(), **extra}


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``env`` (default: the process environment), then ``overrides``."""
    try:
        from_env = _Environment(os.environ if env is None else env)()
    except pydantic_settings.SettingsError as exc:
        ours = exc.__cause__
        raise (ours if isinstance(ours, SettingsError) else SettingsError(str(exc))) from None
    return _validated(from_env).with_overrides(**overrides)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``
    (``load(env={...})`` reads exactly that mapping)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:  # the JSON of a structured value (JOBPULSE_KAFKA_CONFIG)
            raise SettingsError(f"{env_var(field_name)} is not valid JSON: {exc}") from None


def _validated(values: Mapping[str, Any]) -> Settings:
    """``Settings(**values)``, a validation failure turned into one :class:`SettingsError`
    line (pydantic's own message spans lines and would show the rejected value unmasked)."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_error_line(exc.errors()[0])) from None


def _error_line(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = Settings.model_fields.get(name)
    var = env_var("kafka_config" if name == "kafka" else name)
    if error["type"] == "int_parsing":
        return f"{var} must be an integer, got {error['input']!r}"
    if error["type"] in {"greater_than_equal", "less_than_equal"} and field is not None:
        return f"{var} must be {_allowed_range(field)}, got {error['input']}"
    if error["type"] == "value_error":
        return f"{var} {error.get('ctx', {}).get('error')}"
    return f"{var}: {error['msg']}"


def _allowed_range(field: FieldInfo) -> str:
    """``1..1024``, ``0 or more`` or ``at least 1``, from the field's ``ge``/``le``."""
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if high is not None:
        return f"{low}..{high}"
    return "0 or more" if low == 0 else f"at least {low}"


def _dotted(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"sasl": {"mechanism": "PLAIN"}}`` (what ``JOBPULSE_KAFKA__SASL__MECHANISM`` gives)
    → ``{"sasl.mechanism": "PLAIN"}``; every value as a string."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _brokers(bootstrap: str) -> list[str]:
    return [b.strip() for b in bootstrap.split(",") if b.strip()]


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
