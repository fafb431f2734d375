"""Dashboard hardening, over real HTTP against a real ``jobpulse dashboard`` (real Redis):

- ``/login?next=`` only ever redirects to a path on this server (no open redirect);
- a non-ASCII password logs in (and a wrong one is refused), never an HTTP 500;
- ``/healthz`` answers while page loads are in flight (a liveness probe must not restart a
  busy dashboard);
- a page opened after another tab closed still gets its whole document (models shared
  between sessions were wiped when the first session was discarded);
- with ``--processes 2``, both processes serve (each with its own Redis reader) and stop
  together.

Page loads here do what the browser does with the server: ``GET /``, then the page's Bokeh
websocket with its session token, ``PULL-DOC-REQ`` and ``document_ready``, until the page's
models arrive (:mod:`benchmarks._bokeh_session`, shared with the load benchmark).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
import pytest
from bokeh.core.validation import check_integrity
from bokeh.document import Document
from conftest import free_port, spawn_cli
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from benchmarks import _bokeh_session as bokeh_session
from jobpulse import processes
from jobpulse.dashboard import app
from jobpulse.dashboard import view_model as vm
from jobpulse.delta import Cell
from jobpulse.settings import Settings, load
from jobpulse.store import Breakdown, PartitionProgress, Store

pytestmark = pytest.mark.integration

USER, PASSWORD = "ada", "s3cret"
NON_ASCII_USER, NON_ASCII_PASSWORD = "jürgen", "pässwörd"
#: ``next`` values as sent on the wire (the query string is not re-encoded).
HOSTILE_NEXT = {
    "protocol-relative": "//evil.example",
    "backslash": "/\\evil.example/",
    "encoded backslash": "/%5Cevil.example/",
    "absolute URL": "https://evil.example",
    "encoded absolute URL": "https%3A%2F%2Fevil.example",
    "tab": "/%09/evil.example",
    "javascript": "javascript:alert(1)",
    "two backslashes": "%5C%5Cevil.example",
    "CRLF": "/%0D%0ASet-Cookie:%20x=1",
    "no leading slash": "evil.example",
}
#: Per request: generous, so only "never answers under load" fails, not a slow machine.
REQUEST_TIMEOUT_S = 5.0


# -- HTTP helpers ----------------------------------------------------------------------
def basic(user: str, password: str, encoding: str = "utf-8") -> dict[str, str]:
    """An ``Authorization: Basic`` header for ``user:password`` encoded as ``encoding``."""
    token = base64.b64encode(f"{user}:{password}".encode(encoding)).decode()
    return {"Authorization": f"Basic {token}"}


def request(
    url: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``GET target`` (sent as is, not re-encoded) on ``url``'s server, no redirect followed."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


async def load_page(client: AsyncHTTPClient, url: str) -> dict[str, Any]:
    """What a browser does with the server to show the page (see
    :mod:`benchmarks._bokeh_session`): the content of the message that brought the page's
    models."""
    return orjson.loads(await bokeh_session.load_page(client, url, timeout_s=60))


def pull_page(url: str) -> dict[str, Any]:
    """:func:`load_page` from synchronous code."""

    async def run() -> dict[str, Any]:
        client = AsyncHTTPClient(force_instance=True)
        try:
            return await load_page(client, url)
        finally:
            client.close()

    return asyncio.run(run())


# -- dashboards ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def module_settings(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Its own Redis prefix (some data written through the store) and offers topic name."""
    tag = f"sec-{uuid.uuid4().hex[:8]}"
    settings = stack.with_overrides(
        redis_prefix=tag,
        offers_topic=f"t-{tag}.offers",  # never created: the dashboard only reads metadata
        state_dir=Path(tmp_path_factory.mktemp("state")),
    )
    store = Store.connect(settings)
    store.write(
        cells={Cell("Tech", "Europe"): 6, Cell("Retail", "Asia"): 2},
        partitions={0: PartitionProgress(offset=8, records=8)},
    )
    yield settings
    store.clear()
    store.client.close()


@dataclass
class Served:
    """A running ``jobpulse dashboard``."""

    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def dashboard(
    settings: Settings,
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Served]:
    """``jobpulse dashboard *args`` on a free port, its output in ``log``.

    Afterwards: it stopped cleanly on SIGTERM and logged no traceback (a server-side error
    answered as a 500 or a failed document pull shows up there).
    """
    port = free_port()
    with log.open("wb") as out:
        process = spawn_cli(
            settings,
            "dashboard",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
            env=dict(extra_env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=False,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while not healthy(url):
            assert process.poll() is None, f"the dashboard exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
            time.sleep(0.3)
        yield Served(url, process)
    finally:
        processes.stop_child(process, signal.SIGTERM, 15)
    output = log.read_text()
    assert process.returncode in (0, -15), f"no clean stop on SIGTERM:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]


def healthy(url: str) -> bool:
    """Whether ``/healthz`` answers 200."""
    with contextlib.suppress(OSError):
        return request(url, "/healthz")[0] == 200
    return False


@pytest.fixture(scope="module")
def plain_url(module_settings: Settings) -> Iterator[str]:
    with dashboard(module_settings, module_settings.state_dir / "plain.log") as served:
        yield served.url


@pytest.fixture(scope="module")
def auth_url(module_settings: Settings) -> Iterator[str]:
    log = module_settings.state_dir / "auth.log"
    with dashboard(
        module_settings, log, {"JOBPULSE_DASHBOARD_AUTH": f"{USER}:{PASSWORD}"}
    ) as served:
        yield served.url


@pytest.fixture(scope="module")
def non_ascii_url(module_settings: Settings) -> Iterator[str]:
    credentials = f"{NON_ASCII_USER}:{NON_ASCII_PASSWORD}"
    log = module_settings.state_dir / "non-ascii.log"
    with dashboard(module_settings, log, {"JOBPULSE_DASHBOARD_AUTH": credentials}) as served:
        yield served.url


# -- 1. no open redirect after login ---------------------------------------------------
@pytest.mark.parametrize("raw_next", list(HOSTILE_NEXT.values()), ids=list(HOSTILE_NEXT))
def test_login_never_redirects_off_site(auth_url: str, raw_next: str) -> None:
    status, headers, _ = request(auth_url, f"/login?next={raw_next}", basic(USER, PASSWORD))
    assert status == 302
    assert headers["Location"] == "/"


@pytest.mark.parametrize(
    ("raw_next", "location"),
    [
        ("/?x=1", "/?x=1"),
        ("/%3Fx%3D1", "/?x=1"),
        ("/api/breakdown", "/api/breakdown"),
        ("/%255Cevil.example/", "/%5Cevil.example/"),  # a path segment, not a backslash
        ("", "/"),
    ],
    ids=["query kept", "encoded query kept", "path kept", "percent sign kept", "empty"],
)
def test_login_redirects_to_a_same_origin_path(auth_url: str, raw_next: str, location: str) -> None:
    status, headers, _ = request(auth_url, f"/login?next={raw_next}", basic(USER, PASSWORD))
    assert (status, headers["Location"]) == (302, location)


def test_login_challenges_without_credentials(auth_url: str) -> None:
    status, headers, _ = request(auth_url, "/login?next=/%5Cevil.example/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert "Location" not in headers


# -- 2. non-ASCII credentials ----------------------------------------------------------
def test_a_non_ascii_password_logs_in(non_ascii_url: str) -> None:
    right = basic(NON_ASCII_USER, NON_ASCII_PASSWORD)
    status, headers, body = request(non_ascii_url, "/api/breakdown", right)
    assert status == 200, body
    assert orjson.loads(body)["total"] == 8
    # The cookie it got covers the websocket and later requests without the header.
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert request(non_ascii_url, "/api/breakdown", {"Cookie": cookie})[0] == 200
    assert request(non_ascii_url, "/", right)[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        basic(NON_ASCII_USER, "passwörd"),
        basic(NON_ASCII_USER, "wrong"),
        basic("jurgen", NON_ASCII_PASSWORD),
        basic(NON_ASCII_USER, NON_ASCII_PASSWORD, encoding="latin-1"),
        {"Authorization": "Basic !!!"},
        {},
    ],
    ids=["wrong non-ASCII", "wrong ASCII", "wrong user", "latin-1", "not base64", "none"],
)
def test_wrong_credentials_are_refused_not_an_error(
    non_ascii_url: str, headers: dict[str, str]
) -> None:
    assert request(non_ascii_url, "/api/breakdown", headers)[0] == 401
    assert request(non_ascii_url, "/login", headers)[0] == 401
    assert request(non_ascii_url, "/", headers)[0] == 302  # to /login


# -- 3. /healthz under load ------------------------------------------------------------
async def probe(client: AsyncHTTPClient, url: str) -> int:
    """``GET /healthz``: its status, 599 when it did not answer within the timeout."""
    try:
        return (await client.fetch(url + "healthz", request_timeout=REQUEST_TIMEOUT_S)).code
    except HTTPClientError as exc:
        return exc.code
    except OSError:
        return 599


async def probe_during_page_loads(url: str, pages: int) -> tuple[int, list[int], list[int]]:
    """``pages`` concurrent page loads and a probe every 100 ms while any is in flight.

    Returns (page loads that got their document, probe statuses while pages were in
    flight, probe statuses afterwards).
    """
    client = AsyncHTTPClient(force_instance=True, max_clients=pages + 100)
    loads = [asyncio.create_task(load_page(client, url)) for _ in range(pages)]
    during: list[asyncio.Task[int]] = []
    while not all(load.done() for load in loads):
        during.append(asyncio.create_task(probe(client, url)))
        await asyncio.wait(loads, timeout=0.1)
    done = [load for load in loads if load.exception() is None]
    statuses = list(await asyncio.gather(*during))
    after = [await probe(client, url)]
    client.close()
    return len(done), statuses, after


def test_healthz_answers_while_pages_load(plain_url: str) -> None:
    loaded, during, after = asyncio.run(probe_during_page_loads(plain_url, pages=10))
    assert during, "no probe was sent while the pages loaded"
    assert during == [200] * len(during), f"/healthz failed under load: {during}"
    assert after == [200]
    assert loaded == 10


# -- 4. a closed tab does not break the next page ---------------------------------------
def test_a_page_opened_after_another_tab_closed_gets_its_whole_document(plain_url: str) -> None:
    first = pull_page(plain_url)
    # The first session is discarded within 5 s of its websocket closing (checked every
    # 2 s, dropped after 3 s unused).
    time.sleep(6)
    second = pull_page(plain_url)
    for page in (first, second):
        formatters = [
            model["attributes"]
            for model in iter_models(page)
            if model.get("name") == "NumberFormatter"
        ]
        assert formatters, "the tables lost their number formatters"
        assert {plain(f.get("text_align")) for f in formatters} == {"right"}
        assert {plain(f.get("null_format")) for f in formatters} == {"–"}


def plain(value: Any) -> Any:
    """A serialized property value without its ``{"type": "value", "value": ...}`` wrapper."""
    if isinstance(value, dict) and value.get("type") == "value":
        return value["value"]
    return value


def iter_models(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized Bokeh model (``{"type": "object", ...}``) inside a document's JSON."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "name" in node:
            yield node
        for value in node.values():
            yield from iter_models(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_models(value)


# -- 5. several server processes -----------------------------------------------------------
def test_two_processes_serve_page_loads_and_stop_together(module_settings: Settings) -> None:
    # Its own prefix: the other dashboards of this module subscribe to theirs.
    settings = module_settings.with_overrides(redis_prefix=module_settings.redis_prefix + "-2")
    store = Store.connect(settings)
    channel = store.keys.updates
    log = settings.state_dir / "two-processes.log"
    with dashboard(settings, log, args=["--processes", "2"]) as served:
        children = psutil.Process(served.process.pid).children()
        assert len(children) == 2
        deadline = time.monotonic() + 30
        while subscribers(store, channel) < 2:  # each process runs its own feed
            assert time.monotonic() < deadline, "the feeds did not both subscribe"
            time.sleep(0.2)
        loaded, during, after = asyncio.run(probe_during_page_loads(served.url, pages=10))
        assert during == [200] * len(during), f"/healthz failed under load: {during}"
        assert (loaded, after) == (10, [200])
        assert log.read_text().count("dashboard at http") == 1, "the URL once, not per process"
    for child in children:  # SIGTERM to the parent stopped them too
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert subscribers(store, channel) == 0
    store.client.close()


def subscribers(store: Store, channel: str) -> int:
    """``PUBSUB NUMSUB`` of ``channel``."""
    return int(dict(store.client.pubsub_numsub(channel))[channel.encode()])


# -- 6. the page's document (no server) -----------------------------------------------------
def test_the_page_document_passes_bokeh_integrity_checks() -> None:
    """Bokeh validates a session's document when the app made it, which is now the shell
    only: the page's models are built later, so they are checked here."""
    settings = load(env={})
    snapshot = vm.Snapshot(
        breakdown=Breakdown(counts={"Tech": {"Europe": 3}}), windows=(), redis_ok=True
    )
    doc = Document()
    shell = app.page_shell()
    doc.add_root(shell)
    shell.children = app.DashboardSession(settings, snapshot).children(shell.children[0])
    issues = check_integrity(doc.models)
    assert (issues.error, issues.warning) == ([], [])
