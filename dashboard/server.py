"""``jobpulse dashboard``: the Panel app, ``GET /api/breakdown``, ``GET /healthz`` and
optional basic auth, all on one Tornado server with one shared
:class:`~jobpulse.dashboard.feed.Feed`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import signal
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from bokeh.server.auth_provider import AuthProvider
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler

from jobpulse.dashboard.feed import Feed
from jobpulse.errors import UsageError
from jobpulse.settings import Settings
from jobpulse.store import Store

API_PATH = "/api/breakdown"
HEALTH_PATH = "/healthz"
LOGIN_PATH = "/login"
AUTH_COOKIE = "jobpulse_user"
REALM = "jobpulse"


# -- basic auth ------------------------------------------------------------------------
class BasicAuth(AuthProvider):
    """HTTP basic auth for the page, its websocket and the API, from ``user:password``.

    A request with the right ``Authorization: Basic`` header is let in and gets a signed
    cookie, so the websocket (where browsers may not resend the header) is let in too.
    Anything else is redirected by Bokeh to ``/login``, which answers 401 with a
    ``WWW-Authenticate`` challenge (the browser's password prompt).
    """

    def __init__(self, credentials: str) -> None:
        user, _, password = credentials.partition(":")
        self.user = user
        self._password = password
        super().__init__()

    def check_header(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries exactly these credentials."""
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return hmac.compare_digest(user, self.user) & hmac.compare_digest(password, self._password)

    def user_of(self, handler: RequestHandler) -> str | None:
        """The user a request is authenticated as, or ``None``."""
        if self.check_header(handler.request.headers.get("Authorization")):
            if not isinstance(handler, WebSocketHandler):
                handler.set_signed_cookie(AUTH_COOKIE, self.user, httponly=True, samesite="Strict")
            return self.user
        cookie = handler.get_signed_cookie(AUTH_COOKIE)
        return self.user if cookie is not None and cookie.decode() == self.user else None

    @property
    def get_user(self) -> Callable[[RequestHandler], str | None]:
        return self.user_of

    @property
    def login_url(self) -> str:
        return LOGIN_PATH

    @property
    def login_handler(self) -> type[RequestHandler]:
        return partial_handler(LoginHandler, self)


def partial_handler(cls: type[RequestHandler], auth: BasicAuth) -> type[RequestHandler]:
    """A subclass of ``cls`` bound to ``auth`` (Bokeh takes handler classes, not instances)."""
    return type(cls.__name__, (cls,), {"auth": auth})


def challenge(handler: RequestHandler) -> None:
    """Answer 401 with a basic-auth challenge."""
    handler.set_status(401)
    handler.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.finish("authentication required\n")


class LoginHandler(RequestHandler):
    """``/login``: challenge until the browser sends the credentials, then go back."""

    auth: BasicAuth

    def get(self) -> None:
        if self.auth.user_of(self) is None:
            challenge(self)
            return
        target = self.get_argument("next", "/")
        parts = urlsplit(target)
        self.redirect(target if not parts.scheme and not parts.netloc else "/")


# -- the JSON API ----------------------------------------------------------------------
class BreakdownHandler(RequestHandler):
    """``GET /api/breakdown``: ``Breakdown.to_json_dict()`` read from Redis per request."""

    store: Store
    auth: BasicAuth | None = None

    async def get(self) -> None:
        if self.auth is not None and self.auth.user_of(self) is None:
            challenge(self)
            return
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        try:
            breakdown = await asyncio.to_thread(self.store.breakdown)
        except (redis.RedisError, OSError) as exc:
            self.set_status(503)
            self.finish(orjson.dumps({"error": f"Redis unavailable: {exc}"}))
            return
        self.finish(orjson.dumps(breakdown.to_json_dict()))


class HealthHandler(RequestHandler):
    """``GET /healthz``: 200 ``ok`` while the server runs, without credentials or Redis.

    The Kubernetes probes use it: a pod whose Redis is down must stay in the Service, since
    its page is what shows the "Redis unavailable" banner.
    """

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish("ok\n")


def api_handler(settings: Settings, auth: BasicAuth | None) -> type[RequestHandler]:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    store = Store(client, settings.redis_prefix)
    return type("BreakdownHandler", (BreakdownHandler,), {"store": store, "auth": auth})


# -- serving ---------------------------------------------------------------------------
def check_port_free(host: str, port: int) -> None:
    """Fail early with a clear message when the dashboard port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror}); "
                "choose another with --port or JOBPULSE_DASHBOARD_PORT"
            ) from None


def free_port(host: str) -> int:
    """A port nothing listens on right now (for ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def websocket_origins(host: str, port: int) -> list[str]:
    """Origins allowed to open the websocket: any when listening on all interfaces."""
    if host in ("0.0.0.0", "", "::"):
        return ["*"]
    return sorted({f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})


def serve(
    settings: Settings,
    *,
    show: bool = False,
    on_ready: Callable[[str], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> None:
    """Serve the dashboard until Ctrl-C / SIGTERM, or ``stop_when()`` (checked every second)."""
    import panel as pn
    from tornado.ioloop import PeriodicCallback

    from jobpulse.dashboard.app import TITLE, build_app

    host, port = settings.dashboard_host, settings.dashboard_port
    port = port or free_port(host)
    check_port_free(host, port)
    auth = BasicAuth(settings.dashboard_auth) if settings.dashboard_auth else None
    feed = Feed(settings).start()
    options: dict[str, Any] = {
        "extra_patterns": [
            (API_PATH, api_handler(settings, auth)),
            (HEALTH_PATH, HealthHandler),
        ],
        "websocket_origin": websocket_origins(host, port),
        # Drop a closed tab's session (and its feed subscription) within seconds.
        "check_unused_sessions_milliseconds": 2000,
        "unused_session_lifetime_milliseconds": 3000,
    }
    if auth is not None:
        options.update(auth_provider=auth, cookie_secret=secrets.token_hex(32))

    def page() -> pn.viewable.Viewable:
        return build_app(feed, settings)

    server = pn.serve(
        {"/": page},
        port=port,
        address=host,
        show=False,
        start=False,
        title=TITLE,
        verbose=False,
        **options,
    )
    loop = server.io_loop

    def stop_loop(*_args: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop_loop)
    signal.signal(signal.SIGINT, stop_loop)
    if stop_when is not None:
        PeriodicCallback(lambda: loop.stop() if stop_when() else None, 1000).start()
    url = f"http://{'localhost' if host in ('0.0.0.0', '', '::') else host}:{server.port}/"
    if on_ready is not None:
        on_ready(url)
    if show:
        loop.add_callback(server.show, "/")
    try:
        server.start()
        loop.start()
    finally:
        feed.stop()
        server.stop()
