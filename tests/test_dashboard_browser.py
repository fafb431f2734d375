"""The dashboard in a real browser (headless Debian Chromium via Playwright) against real
Kafka, Redis and the real dataflow; plus ``GET /api/breakdown`` and basic auth.

Screenshots go to ``test-artifacts/`` (git-ignored). The update latencies are printed
(run with ``-s`` to see them); they are measured, not asserted beyond "a few seconds".
"""

from __future__ import annotations

import base64
import contextlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from conftest import REPO, CliRunner, PrivateRedis, free_port, spawn_cli

from jobpulse import processes
from jobpulse.breakdown import continent_label
from jobpulse.delta import CONTINENTS, Cell
from jobpulse.offer import UNKNOWN, Offer, Op
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
TABLE = ".jp-breakdown-table"
#: How long the page may take to show a change (the target is 1 s; CI machines are slow).
CHANGE_TIMEOUT_MS = 8000
#: The longest category of the real data set.
LONG_CATEGORY = "Marketing / Communication"

# Records the time the open-offers number changes, and a marker that a reload would erase.
WATCH_JS = """
(el) => {
  const root = el.getRootNode();
  const read = () => {
    const e = root.querySelector('[data-testid=open-offers]');
    return e ? e.textContent : null;
  };
  window.__jpChanges = [];
  window.__jpMarker = 'same page';
  let last = read();
  new MutationObserver(() => {
    const value = read();
    if (value !== last) { last = value; window.__jpChanges.push([Date.now(), value]); }
  }).observe(root, {subtree: true, childList: true, characterData: true});
}
"""


# -- helpers -----------------------------------------------------------------------------
def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def dashboard(settings: Settings, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``jobpulse dashboard`` in a subprocess on a free port; yields its URL."""
    port = free_port()
    process = spawn_cli(
        settings,
        "dashboard",
        "--host",
        "127.0.0.1",
        env={"JOBPULSE_DASHBOARD_PORT": str(port), **(extra_env or {})},
        stderr=subprocess.STDOUT,
        text=False,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"jobpulse dashboard exited with {process.returncode}:\n{output}")
            with contextlib.suppress(OSError):
                if http_get(url + "healthz")[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("jobpulse dashboard did not answer within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        processes.stop_child(process, signal.SIGTERM, 10)
        assert process.returncode in (0, -15), "the dashboard should stop cleanly on SIGTERM"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    yield tab
    context.close()


def open_dashboard(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid=open-offers]", timeout=30_000)
    page.wait_for_selector(f"{TABLE} .slick-row", timeout=30_000)


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def page_table(page: Any) -> dict[str, dict[str, int]]:
    """The breakdown table as shown: {row: {column title: n}} (Total row/column included)."""
    short_to_name = {continent_label(name): name for name in (*CONTINENTS, UNKNOWN)}
    headers = [
        short_to_name.get(t.strip(), t.strip())
        for t in page.locator(f"{TABLE} .slick-header-column").all_inner_texts()
    ]
    table: dict[str, dict[str, int]] = {}
    for row in page.locator(f"{TABLE} .slick-row").all():
        cells = [c.strip() for c in row.locator(".slick-cell").all_inner_texts()]
        table[cells[0]] = {h: number(v) for h, v in zip(headers[1:], cells[1:], strict=True)}
    return table


def shown_counts(table: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """The table's cells in the ``breakdown --json`` shape (zero cells left out)."""
    return {
        category: {c: n for c, n in row.items() if n and c != "Total"}
        for category, row in table.items()
        if category != "Total" and any(n for c, n in row.items() if c != "Total")
    }


def assert_table_totals_consistent(table: Mapping[str, Mapping[str, int]]) -> None:
    body = {k: v for k, v in table.items() if k != "Total"}
    for row in body.values():
        assert row["Total"] == sum(n for c, n in row.items() if c != "Total")
    for column in table["Total"]:
        assert table["Total"][column] == sum(row[column] for row in body.values())


def open_offers(page: Any) -> int:
    return number(page.locator("[data-testid=open-offers]").inner_text())


def wait_for_open_offers(page: Any, expected: int) -> float:
    """Wait until the page shows ``expected`` open offers; return when it changed (epoch s)."""
    page.wait_for_function(
        "(n) => window.__jpChanges.some(([, v]) => Number(v.replaceAll(',', '')) === n)",
        arg=expected,
        timeout=CHANGE_TIMEOUT_MS,
    )
    changes = page.evaluate("window.__jpChanges")
    return min(t for t, v in changes if number(v) == expected) / 1000


def wait_for_kafka_checks(page: Any, checks: int, timeout_s: float = 20.0) -> None:
    """Wait until the page says the dashboard finished ``checks`` Kafka checks (polled: the
    attribute sits in a Div's shadow root, which Playwright's locators reach)."""
    kafka = page.locator("[data-testid=kafka-status]")
    deadline = time.monotonic() + timeout_s
    while int(kafka.get_attribute("data-checks") or 0) < checks:
        assert time.monotonic() < deadline, f"fewer than {checks} Kafka checks in {timeout_s} s"
        page.wait_for_timeout(100)


def produce(settings: Settings, offers: list[Offer]) -> None:
    producer = Producer(settings.kafka_client_config(acks="all", **{"enable.idempotence": True}))
    for offer in offers:
        producer.produce(settings.offers_topic, key=offer.key(), value=offer.to_json())
    assert producer.flush(30) == 0


class UpdateListener:
    """Records when each Redis update notification of a prefix arrives (a write's time)."""

    def __init__(self, settings: Settings) -> None:
        self.store = Store.connect(settings)
        self.pubsub = self.store.pubsub()
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pubsub.get_message(timeout=0.2) is not None:
                self.times.append(time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.store.client.close()


PLACES = {
    "Europe": (48.8566, 2.3522),  # Paris
    "North America": (40.7128, -74.0060),  # New York
    "Asia": (35.6762, 139.6503),  # Tokyo
    "Oceania": (-33.8688, 151.2093),  # Sydney
}


def scenario_offers(prefix: str, count: int, start: int = 0) -> list[Offer]:
    """Offers spread over 3 categories (one of them missing → Unknown) and 5 continents."""
    categories = ["Tech", "Business", None]
    places = [*PLACES.values(), None]
    offers = []
    for i in range(start, start + count):
        place = places[i % len(places)]
        offers.append(
            Offer(
                id=f"{prefix}-{i}",
                category=categories[i % len(categories)],
                latitude=place[0] if place else None,
                longitude=place[1] if place else None,
            )
        )
    return offers


# -- tests -------------------------------------------------------------------------------
def test_page_shows_the_dataflow_breakdown_and_follows_it_live(
    settings: Settings, cli: CliRunner, page: Any
) -> None:
    first = scenario_offers("a", 30)
    produce(settings, first)
    run = cli(settings, "run", "--once")
    assert run.returncode == 0, run.stderr

    with dashboard(settings) as url:
        open_dashboard(page, url)
        breakdown = orjson.loads(cli(settings, "breakdown", "--json").stdout)
        assert breakdown["total"] == len(first)
        table = page_table(page)
        assert shown_counts(table) == breakdown["counts"]
        assert table["Total"]["Total"] == breakdown["total"]
        assert_table_totals_consistent(table)
        assert open_offers(page) == breakdown["total"]
        assert page.locator("[data-testid=redis-status]").get_attribute("data-ok") == "true"

        status, body = http_get(url + "api/breakdown")
        assert status == 200
        assert orjson.loads(body) == Store.connect(settings).breakdown().to_json_dict()

        # More offers and two closures → the page follows without a reload.
        page.locator("[data-testid=open-offers]").evaluate(WATCH_JS)
        more = scenario_offers("a", 7, start=30)
        closed = [Offer(id=first[0].id, op=Op.DELETE), Offer(id=first[1].id, op=Op.DELETE)]
        produce(settings, [*more, *closed])
        listener = UpdateListener(settings)
        try:
            run = cli(settings, "run", "--once")
            assert run.returncode == 0, run.stderr
            expected_total = len(first) + len(more) - len(closed)
            changed_at = wait_for_open_offers(page, expected_total)
        finally:
            listener.close()
        assert listener.times, "the dataflow published no update notification"
        write_at = max(t for t in listener.times if t <= changed_at + 0.05)
        print(
            f"\n[dashboard] dataflow write → page change: {(changed_at - write_at) * 1000:.0f} ms"
        )
        assert page.evaluate("window.__jpMarker") == "same page"

        breakdown = orjson.loads(cli(settings, "breakdown", "--json").stdout)
        assert breakdown["total"] == expected_total
        page.wait_for_timeout(300)  # the table is patched in the same tick as the number
        table = page_table(page)
        assert shown_counts(table) == breakdown["counts"]
        assert_table_totals_consistent(table)
        status, body = http_get(url + "api/breakdown")
        assert orjson.loads(body) == Store.connect(settings).breakdown().to_json_dict()

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, PrivateRedis]]:
    """A private redis-server on a free port (never the shared one): (url, its control)."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server.url, server
    server.stop()


def write_cells(store: Store, cells: Mapping[Cell, int]) -> float:
    """Write through the real store; return the wall time just before the write."""
    t0 = time.time()
    store.write(cells=dict(cells), partitions={0: PartitionProgress(offset=5, records=5)})
    return t0


def test_redis_down_shows_banner_and_recovers(
    stack: Settings, own_redis: tuple[str, PrivateRedis], page: Any, tmp_path: Path
) -> None:
    url_redis, control = own_redis
    settings = stack.with_overrides(
        redis_url=url_redis, redis_prefix="dash", state_dir=tmp_path / "state"
    )
    store = Store.connect(settings)
    with dashboard(settings) as url:
        open_dashboard(page, url)
        # Empty Redis is a valid state: zeros and a note, no error.
        assert open_offers(page) == 0
        assert page.locator("[data-testid=empty-note]").inner_text() == "No open offers yet."
        assert page_table(page) == {"Total": dict.fromkeys(page_table(page)["Total"], 0)}
        assert page.locator("[data-testid=redis-banner]").count() == 0
        page.locator("[data-testid=open-offers]").evaluate(WATCH_JS)

        latencies = []
        for n in (3, 8, 13):
            t0 = write_cells(store, {Cell("Tech", "Europe"): n, Cell("Admin", "Asia"): 2})
            latencies.append(wait_for_open_offers(page, n + 2) - t0)
        print(
            "\n[dashboard] Store.write → page change: "
            + ", ".join(f"{lat * 1000:.0f} ms" for lat in latencies)
        )
        assert page_table(page)["Tech"]["Europe"] == 13
        assert page.locator("[data-testid=empty-note]").count() == 0

        control.stop()
        banner = page.locator("[data-testid=redis-banner]")
        banner.wait_for(state="visible", timeout=10_000)
        assert "Redis unavailable" in banner.inner_text()
        assert page.locator("[data-testid=redis-status]").get_attribute("data-ok") == "false"
        assert open_offers(page) == 15, "the last numbers read stay on the page"
        status, _ = http_get(url + "api/breakdown")
        assert status == 503
        assert http_get(url + "healthz") == (200, b"ok\n"), "probes must not drop this pod"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-redis-down.png"), full_page=True)

        control.start()  # comes back empty (no persistence)
        page.wait_for_selector("[data-testid=redis-banner]", state="detached", timeout=15_000)
        assert page.locator("[data-testid=redis-status]").get_attribute("data-ok") == "true"
        store = Store.connect(settings)
        write_cells(store, {Cell("Retail", "Oceania"): 4})
        wait_for_open_offers(page, 4)
        assert page.evaluate("window.__jpMarker") == "same page"


def test_basic_auth_protects_page_and_api(
    stack: Settings, own_redis: tuple[str, PrivateRedis], browser: Any, tmp_path: Path
) -> None:
    url_redis, _ = own_redis
    settings = stack.with_overrides(
        redis_url=url_redis, redis_prefix="auth", state_dir=tmp_path / "state"
    )
    store = Store.connect(settings)
    write_cells(store, {Cell("Tech", "Europe"): 6})
    with dashboard(settings, {"JOBPULSE_DASHBOARD_AUTH": "ada:s3cret"}) as url:
        assert http_get(url + "api/breakdown")[0] == 401
        assert http_get(url + "api/breakdown", ("ada", "wrong"))[0] == 401
        status, body = http_get(url + "api/breakdown", ("ada", "s3cret"))
        assert status == 200
        assert orjson.loads(body) == store.breakdown().to_json_dict()
        assert http_get(url)[0] in (302, 401)

        assert http_get(url + "login")[0] == 401  # the browser's password prompt
        assert http_get(url + "healthz") == (200, b"ok\n"), "probes carry no credentials"

        context = browser.new_context(http_credentials={"username": "ada", "password": "s3cret"})
        authed = context.new_page()
        open_dashboard(authed, url)
        assert open_offers(authed) == 6
        context.close()


def test_a_missing_offers_topic_is_shown_and_never_created(
    stack: Settings, own_redis: tuple[str, PrivateRedis], page: Any, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient

    url_redis, _ = own_redis
    topic = f"t-{uuid.uuid4().hex[:8]}.never-created"
    settings = stack.with_overrides(
        redis_url=url_redis, redis_prefix="missing", offers_topic=topic, state_dir=tmp_path / "s"
    )
    admin = AdminClient(settings.kafka_client_config())
    assert topic not in admin.list_topics(timeout=10).topics
    with dashboard(settings) as url:
        open_dashboard(page, url)
        kafka = page.locator("[data-testid=kafka-status]")
        page.locator("[data-testid=kafka-status][data-ok=true]").wait_for(timeout=15_000)
        # Two more Kafka checks (every 3 s) on the dashboard's Kafka thread, each a chance
        # to create the topic.
        wait_for_kafka_checks(page, int(kafka.get_attribute("data-checks") or 0) + 2)
        assert topic not in admin.list_topics(timeout=10).topics, "the dashboard created it"
        assert kafka.get_attribute("data-topic-missing") == "true"
        assert "offers topic missing" in kafka.inner_text()
        assert page.locator("[data-testid=total-lag]").inner_text() == "–"


def test_one_redis_subscription_per_server_whatever_the_number_of_pages(
    stack: Settings, own_redis: tuple[str, PrivateRedis], browser: Any, tmp_path: Path
) -> None:
    url_redis, _ = own_redis
    settings = stack.with_overrides(
        redis_url=url_redis, redis_prefix="fanout", state_dir=tmp_path / "state"
    )
    store = Store.connect(settings)
    channel = store.keys.updates

    def subscribers() -> int:
        return int(dict(store.client.pubsub_numsub(channel))[channel.encode()])

    with dashboard(settings) as url:
        contexts = [browser.new_context() for _ in range(3)]
        try:
            pages = [context.new_page() for context in contexts]
            for tab in pages:
                open_dashboard(tab, url)
            write_cells(store, {Cell("Tech", "Europe"): 3, Cell(LONG_CATEGORY, "Asia"): 2})
            deadline = time.monotonic() + CHANGE_TIMEOUT_MS / 1000
            while any(open_offers(tab) != 5 for tab in pages):  # all live, fed by one reader
                assert time.monotonic() < deadline, "a page did not follow the write"
                time.sleep(0.2)
            observed = set()
            for _ in range(6):  # stays one while the pages are open
                observed.add(subscribers())
                time.sleep(0.5)
            assert observed == {1}
            # The longest category is shown whole, not clipped by its column.
            cell = pages[0].locator(f"{TABLE} .slick-cell.l0", has_text=LONG_CATEGORY)
            assert cell.inner_text().strip() == LONG_CATEGORY
            assert cell.evaluate("e => e.scrollWidth <= e.clientWidth"), "category clipped"
        finally:
            for context in contexts:
                context.close()


def test_a_redis_never_reached_shows_dashes_not_zeros(
    stack: Settings, page: Any, tmp_path: Path
) -> None:
    settings = stack.with_overrides(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        redis_prefix="never",
        state_dir=tmp_path / "state",
    )
    with dashboard(settings) as url:
        page.goto(url)
        page.locator("[data-testid=redis-banner]").wait_for(state="visible", timeout=30_000)
        page.wait_for_selector(f"{TABLE} .slick-row", timeout=30_000)
        assert page.locator("[data-testid=open-offers]").inner_text() == "–"
        assert page.locator("[data-testid=dlq-count]").inner_text() == "–"
        assert page.locator("[data-testid=empty-note]").count() == 0
        total_row = page.locator(f"{TABLE} .slick-row", has_text="Total")
        numbers = [c.strip() for c in total_row.locator(".slick-cell").all_inner_texts()[1:]]
        assert numbers and set(numbers) == {"–"}
        banner = page.locator("[data-testid=redis-banner]").inner_text()
        assert "nothing has been read yet" in banner
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-redis-never-reached.png"), full_page=True)
