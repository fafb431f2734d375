"""PostgreSQL connections, in one place: every client jobpulse opens goes through :func:`connect`.

The server is ``JOBPULSE_POSTGRES_URL`` (a libpq URL or ``key=value`` string; credentials and
TLS go there). A connection that cannot be made is one line that never shows a password
(the text of libpq's error goes through :meth:`Settings.scrub`):

- :class:`~jobpulse.errors.AuthenticationFailed` — the server answers but refuses the URL's
  user, password or database (retrying will not help);
- :class:`~jobpulse.errors.ServiceUnavailable` — anything else (not reachable, starting up…);
- :class:`~jobpulse.errors.UsageError` — the URL itself is malformed.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from jobpulse.errors import AuthenticationFailed, ServiceUnavailable, UsageError
from jobpulse.settings import MASK, Settings, mask_url

#: Seconds libpq may take to connect (each address a host name resolves to).
CONNECT_TIMEOUT_S = 3
DEFAULT_PORT = 5432

#: libpq's texts for a server that answers but refuses who we are or what we ask for.
_PASSWORD_REFUSED = re.compile(r"password authentication failed|authentication failed", re.I)
_NO_PASSWORD = re.compile(r"no password supplied|password is required", re.I)
#: A secret of a ``key=value`` connection string (``password=…``, ``sslpassword='…'``).
_KEY_VALUE_SECRET = re.compile(r"\b(\w*pass\w*)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)
_REFUSED = re.compile(
    r"role \".*\" does not exist|database \".*\" does not exist|no pg_hba\.conf entry"
    r"|is not permitted to log in|permission denied for database",
    re.I,
)


@dataclass(frozen=True)
class Target:
    """Where and as whom ``JOBPULSE_POSTGRES_URL`` connects (libpq's defaults filled in)."""

    #: ``None`` or a directory: libpq's Unix socket, no TCP host.
    host: str | None
    port: int
    user: str
    dbname: str
    #: The URL's own password (``None``: it gives none).
    password: str | None

    @property
    def tcp(self) -> bool:
        """Whether it connects over TCP (not a Unix socket)."""
        return bool(self.host) and not str(self.host).startswith("/")

    @property
    def address(self) -> str:
        """``host:port`` (``[::1]:5432``), or the socket directory and port."""
        host = self.host or "(local socket)"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def display(settings: Settings) -> str:
    """``JOBPULSE_POSTGRES_URL`` as it may be shown: passwords masked, whether it is a URL
    (``postgresql://jobpulse:***@localhost:5432/jobpulse``) or a ``key=value`` string
    (``host=db password=***``)."""
    url = settings.postgres_url
    if "://" in url:
        return mask_url(url)
    return _KEY_VALUE_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", url)


def target(settings: Settings) -> Target:
    """The host, port, user and database of ``settings.postgres_url``: the first host of a
    list, and what libpq would use for a part the URL leaves out (its user defaults to the
    login name, its database to the user, its port to 5432)."""
    try:
        params = conninfo_to_dict(settings.postgres_url)
    except psycopg.ProgrammingError as exc:
        raise _bad_url(settings, exc) from None
    defaults = {
        opt.keyword.decode(): opt.val.decode() if opt.val is not None else None
        for opt in pq.Conninfo.get_defaults()
    }

    def param(name: str) -> str | None:
        value = params.get(name)
        return str(value).split(",")[0] if value not in (None, "") else defaults.get(name)

    port = param("port") or str(DEFAULT_PORT)
    if not port.isdigit():
        raise UsageError(
            f"JOBPULSE_POSTGRES_URL has port {port!r}, not a number ({display(settings)})"
        )
    user = param("user") or getpass.getuser()
    password = params.get("password")
    return Target(
        host=param("host") or None,
        port=int(port),
        user=user,
        dbname=param("dbname") or user,
        password=str(password) if password is not None else None,
    )


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to ``settings.postgres_url`` (3 s connect timeout, TCP keepalives).

    Raises :class:`AuthenticationFailed` if the server refuses the URL's credentials or
    database, :class:`ServiceUnavailable` if it cannot be reached, :class:`UsageError` for a
    malformed URL — each one line, secrets masked.
    """
    target(settings)  # a malformed URL (or port) is a UsageError, not "unreachable"
    try:
        return psycopg.connect(
            settings.postgres_url,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=autocommit,
            # A server that hangs (not one that is down) is noticed within ~1 min, not never:
            # TCP keepalives, and unacknowledged writes time out.
            keepalives=1,
            keepalives_idle=15,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=60_000,
        )
    except psycopg.ProgrammingError as exc:  # the conninfo string itself
        raise _bad_url(settings, exc) from None
    except psycopg.Error as exc:
        raise unavailable(settings, exc) from None


def server_version(settings: Settings) -> str | None:
    """The server's version (``15.18``) if PostgreSQL answers at the URL, else ``None``.

    A server that answers but refuses the URL's credentials or database is not "down": that
    raises :class:`AuthenticationFailed` (waiting or starting another will not help).
    """
    try:
        conn = connect(settings, autocommit=True)
    except AuthenticationFailed:
        raise
    except ServiceUnavailable:
        return None
    try:
        return format_version(conn.info.server_version)
    finally:
        conn.close()


def format_version(number: int) -> str:
    """libpq's version number as people write it: ``150018`` → ``15.18``, ``90624`` → ``9.6.24``."""
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def is_refusal(exc: BaseException) -> bool:
    """Whether a connection error means "the server answers but refuses this user, password
    or database" (not "unreachable")."""
    text = str(exc)
    return any(p.search(text) for p in (_PASSWORD_REFUSED, _NO_PASSWORD, _REFUSED))


def unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """The one-line error for a PostgreSQL connection that failed with ``exc``: refused
    (:class:`AuthenticationFailed`) or not reachable. Never shows a password."""
    shown = display(settings)
    detail = _detail(settings, exc)
    try:
        where = target(settings)
    except UsageError:
        return ServiceUnavailable(f"PostgreSQL is not reachable at {shown} ({detail})")
    user, address = where.user, where.address
    if not is_refusal(exc):
        return ServiceUnavailable(
            f"PostgreSQL is not reachable at {shown} ({detail}); "
            "start it with `jobpulse stack up` or set JOBPULSE_POSTGRES_URL"
        )
    text = str(exc)
    if _NO_PASSWORD.search(text) and where.password is None:
        return AuthenticationFailed(
            f"PostgreSQL authentication failed for user {user!r} at {address}: the server "
            f"requires a password and JOBPULSE_POSTGRES_URL ({shown}) gives none; "
            "set it as postgresql://user:password@host:port/database"
        )
    if _PASSWORD_REFUSED.search(text) or _NO_PASSWORD.search(text):
        return AuthenticationFailed(
            f"PostgreSQL authentication failed for user {user!r} at {address} ({detail}): "
            f"check the user and password in JOBPULSE_POSTGRES_URL ({shown})"
        )
    return AuthenticationFailed(
        f"PostgreSQL at {address} refused user {user!r} on database {where.dbname!r} "
        f"({detail}): check JOBPULSE_POSTGRES_URL ({shown}); `jobpulse stack up` creates "
        "the user and the database on a PostgreSQL it runs itself"
    )


def _detail(settings: Settings, exc: BaseException) -> str:
    """libpq's reason, on one line, without its boilerplate, secrets masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(" Is the server running", 1)[0]
    reason = re.search(r".*\bfailed: (?:FATAL: )?(.+)$", text)
    text = _KEY_VALUE_SECRET.sub(
        lambda m: f"{m.group(1)}={MASK}", reason.group(1) if reason else text
    )
    try:
        return settings.scrub(text)
    except ValueError:  # a URL too broken for urllib to find its password in
        return "the URL cannot be parsed"


def _bad_url(settings: Settings, exc: BaseException) -> UsageError:
    return UsageError(
        f"JOBPULSE_POSTGRES_URL is not a valid PostgreSQL URL ({_detail(settings, exc)}): "
        "use postgresql://user:password@host:port/database"
    )
