"""``jobpulse dashboard``: the page, ``GET /api/breakdown``, ``GET /healthz`` and optional
basic auth, all on one Tornado server (Panel's, serving the Bokeh page of
:mod:`jobpulse.dashboard.app`) with one shared :class:`~jobpulse.dashboard.feed.Feed`; or
on several forked server processes sharing the port, each with its own feed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import hmac
import os
import re
import secrets
import signal
import socket
import time
import webbrowser
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
import redis
from bokeh.server.auth_provider import AuthProvider
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler

from jobpulse import metrics
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
        # Bytes, not str: compare_digest refuses str with non-ASCII characters (a TypeError,
        # an HTTP 500, for a password like "pässwörd").
        return hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode(), self._password.encode()
        )

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
        self.redirect(same_origin_path(self.get_argument("next", "/")))


#: ASCII control characters (browsers drop tabs and newlines from URLs: "/\t/x" is "//x").
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def same_origin_path(target: str) -> str:
    """``target`` if it is a plain absolute path on this server, else ``"/"``.

    Browsers read ``//host``, ``/\\host`` and ``\\host`` as another host (a backslash is a
    slash to them), and drop tabs and newlines first (``/<tab>/host`` is ``//host``). So a
    redirect target must start with exactly one ``/``, hold no backslash and no control
    character anywhere, and have no scheme or host as :func:`urllib.parse.urlsplit` reads it.
    """
    parts = urlsplit(target)
    safe = (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not _CONTROL.search(target)
        and not parts.scheme
        and not parts.netloc
    )
    return target if safe else "/"


# -- the JSON API ----------------------------------------------------------------------
class BreakdownHandler(RequestHandler):
    """``GET /api/breakdown``: ``Breakdown.to_json_dict()`` read from Redis per request."""

    store: Store
    auth: BasicAuth | None = None

    async def get(self) -> None:
        started = time.perf_counter()
        try:
            await self._answer()
        finally:  # every answer, 401 and 503 included, in jobpulse_dashboard_api_…
            seconds = time.perf_counter() - started
            metrics.API_SECONDS.labels(str(self.get_status())).observe(seconds)

    async def _answer(self) -> None:
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
    store = Store.connect(settings, check=False)
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


def websocket_origins(host: str, port: int, allowed: str | None = None) -> list[str]:
    """Origins allowed to open the websocket: ``allowed`` (``JOBPULSE_DASHBOARD_ORIGINS``,
    comma-separated) when given — behind an Ingress, the public name the browser shows —
    else the listening address, or any when listening on all interfaces."""
    if allowed:
        return sorted({origin.strip() for origin in allowed.split(",") if origin.strip()})
    if host in ("0.0.0.0", "", "::"):
        return ["*"]
    return sorted({f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})


def serve(
    settings: Settings,
    *,
    processes: int = 1,
    show: bool = False,
    on_ready: Callable[[str], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> None:
    """Serve the dashboard until Ctrl-C / SIGTERM, or ``stop_when()`` (checked every second).

    With ``processes`` > 1 this process forks that many server processes and only looks after
    them (:func:`fork_server_processes`); each one listens on the port (:func:`listen_shared`)
    with its own feed and page builder.
    """
    import panel as pn

    from jobpulse.dashboard.app import TITLE, PageFactory

    if processes > 1 and stop_when is not None:
        raise ValueError("stop_when needs a single server process")
    host, port = settings.dashboard_host, settings.dashboard_port
    port = port or free_port(host)
    check_port_free(host, port)
    # Made before any fork: every process accepts the cookie any of them signed.
    auth = BasicAuth(settings.dashboard_auth) if settings.dashboard_auth else None
    options = server_options(settings, auth, host, port)
    # Whatever exists now lives as long as the server: out of the garbage collector's way
    # (Bokeh collects after every closed session) and shared, not copied, by forked processes.
    gc.collect()
    gc.freeze()
    parent = os.getpid()
    if processes > 1:
        fork_server_processes(processes)
    serve_metrics(settings)
    pages: PageFactory | None = None

    def page() -> None:
        # Bokeh's own app on Panel's server: the page's models go straight into the
        # session's document (Panel layouts would cost as much again per page load).
        assert pages is not None, "a session before the server started"
        pages(pn.state.curdoc)

    server = pn.serve(
        {"/": page},
        # Several processes each add their own socket on the port (listen_shared); Bokeh's
        # own listener then takes any free port on the loopback interface, unused.
        port=port if processes == 1 else 0,
        address=host if processes == 1 else "127.0.0.1",
        show=False,
        start=False,
        title=TITLE,
        verbose=False,
        **options,
    )
    if processes > 1:
        listen_shared(server, host, port)
    feed = Feed(settings).start()
    pages = PageFactory(feed, settings)
    url = f"http://{'localhost' if host in ('0.0.0.0', '', '::') else host}:{port}/"
    try:
        run(
            server,
            url,
            parent if processes > 1 else None,
            show=show,
            on_ready=on_ready,
            stop_when=stop_when,
        )
    finally:
        pages.shutdown()
        feed.stop()
        server.stop()


def serve_metrics(settings: Settings) -> None:
    """``/metrics`` of this server process (JOBPULSE_METRICS_PORT; forked process i on
    port + i: each has its own sessions and feed)."""
    from tornado.process import task_id

    metrics.serve(settings, "dashboard", offset=task_id() or 0)


def server_options(
    settings: Settings, auth: BasicAuth | None, host: str, port: int
) -> dict[str, Any]:
    """``pn.serve`` options: the API and health handlers, websocket origins, auth."""
    options: dict[str, Any] = {
        "extra_patterns": [
            (API_PATH, api_handler(settings, auth)),
            (HEALTH_PATH, HealthHandler),
        ],
        "websocket_origin": websocket_origins(host, port, settings.dashboard_origins),
        # Drop a closed tab's session (and its feed subscription) within seconds.
        "check_unused_sessions_milliseconds": 2000,
        "unused_session_lifetime_milliseconds": 3000,
    }
    if auth is not None:
        # One secret for every replica (JOBPULSE_DASHBOARD_COOKIE_SECRET, from a Secret):
        # a cookie signed by one pod is accepted by the next.
        cookie_secret = settings.dashboard_cookie_secret or secrets.token_hex(32)
        options.update(auth_provider=auth, cookie_secret=cookie_secret)
    return options


def run(
    server: Any,
    url: str,
    parent: int | None,
    *,
    show: bool,
    on_ready: Callable[[str], None] | None,
    stop_when: Callable[[], bool] | None,
) -> None:
    """Run ``server``'s IO loop until SIGTERM / SIGINT, ``stop_when()``, or (a forked server
    process, ``parent`` given) until the parent process is gone."""
    from tornado.ioloop import PeriodicCallback
    from tornado.process import task_id

    loop = server.io_loop

    def stop_loop(*_args: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop_loop)
    signal.signal(signal.SIGINT, stop_loop)
    if stop_when is not None:
        PeriodicCallback(lambda: loop.stop() if stop_when() else None, 1000).start()
    if parent is not None:  # killed without passing a signal on, the parent leaves us here
        PeriodicCallback(lambda: loop.stop() if os.getppid() != parent else None, 1000).start()
    first = not task_id()  # the only process, or the first forked one
    if on_ready is not None and first:
        on_ready(url)
    if show and first:
        loop.add_callback(webbrowser.open, url)
    server.start()
    loop.start()


def fork_server_processes(count: int) -> None:
    """Fork ``count`` server processes and return in each of them, never in this one.

    This process stays to look after them (tornado's ``fork_processes``): it passes SIGTERM
    and SIGINT on, restarts one that dies, and exits (status 0) once they all stopped.
    """
    from tornado.process import fork_processes

    signal.signal(signal.SIGTERM, forward_to_children)
    signal.signal(signal.SIGINT, forward_to_children)
    fork_processes(count)


def forward_to_children(signum: int, _frame: object) -> None:
    """Signal handler of the parent of the server processes: pass the signal on."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            child.send_signal(signum)


def listen_shared(server: Any, host: str, port: int) -> None:
    """Make a (forked) Bokeh server also accept connections on ``host:port``, with
    ``SO_REUSEPORT``: each server process has its own socket on the port and the kernel
    spreads new connections evenly over them.

    (One socket shared by all the processes does not spread a burst: the process that wakes
    first accepts every pending connection, and each page is built by the process that
    serves its websocket.) Bokeh binds its own socket without that option and keeps its
    tornado ``HTTPServer`` in ``_http`` (bokeh 3.9, pinned in pyproject.toml).
    """
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    http_server = getattr(server, "_http", None)
    if not isinstance(http_server, HTTPServer):
        raise UsageError("this Bokeh version cannot serve from several processes: --processes 1")
    http_server.add_sockets(bind_sockets(port, host, reuse_port=True))
