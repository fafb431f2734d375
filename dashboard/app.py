"""The Panel app: one :class:`DashboardSession` per browser tab, fed by the shared feed.

Every dynamic part is a Bokeh model owned by the session (``ColumnDataSource`` for the
table and charts, ``Div`` for the numbers). The feed thread hands each session a snapshot;
the session schedules :meth:`DashboardSession.apply` on its own document with
``doc.add_next_tick_callback`` (the one thread-safe entry into a Bokeh document), and
``apply`` sends only what changed: ``patch`` for changed cells, ``stream`` for new windows,
a ``data`` swap only when the shape changed (a new category, a reset).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import panel as pn
from bokeh.document import Document
from bokeh.models import (
    ColumnDataSource,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    InlineStyleSheet,
    NumberFormatter,
    StringFormatter,
    TableColumn,
)
from bokeh.plotting import figure

from jobpulse.dashboard import view_model as vm
from jobpulse.dashboard.feed import Feed
from jobpulse.settings import Settings

TITLE = "jobpulse — open job offers"

#: Styles for the HTML inside the Divs (each Bokeh Div lives in its own shadow root).
CARD_CSS = """
.jp-cards { display: flex; gap: 12px; flex-wrap: wrap; }
.jp-card { background: #fff; border: 1px solid #dde3ea; border-radius: 8px;
  padding: 10px 16px; min-width: 150px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.jp-label { color: #5b6b7b; font-size: 13px; }
.jp-value { font-size: 28px; font-weight: 600; color: #1f2d3d; font-variant-numeric: tabular-nums; }
.jp-sub { color: #7b8b9b; font-size: 12px; }
"""
STATUS_CSS = """
.jp-status { display: flex; gap: 18px; flex-wrap: wrap; font-size: 14px; color: #33414f; }
.jp-dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 5px; vertical-align: middle; }
.jp-ok { background: #2e9d48; } .jp-down { background: #d23f31; }
.jp-unknown { background: #a0a8b0; }
"""
BANNER_CSS = """
.jp-banner { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd;
  border-radius: 6px; padding: 10px 14px; font-size: 15px; font-weight: 600; }
"""
EMPTY_CSS = ".jp-empty { color: #5b6b7b; font-style: italic; padding: 4px 2px; }"

#: Table headers that would not fit their column.
SHORT_NAMES = {"North America": "N. America", "South America": "S. America"}
COUNT = NumberFormatter(format="0,0", text_align="right")
BOLD_COUNT = NumberFormatter(format="0,0", text_align="right", font_style="bold")


def _div(css: str, css_class: str, **kwargs: Any) -> Div:
    return Div(
        text="",
        stylesheets=[InlineStyleSheet(css=css)],
        css_classes=[css_class],
        sizing_mode="stretch_width",
        **kwargs,
    )


class DashboardSession:
    """The Bokeh models of one browser session and how a snapshot updates them."""

    def __init__(self, settings: Settings, snapshot: vm.Snapshot) -> None:
        self.settings = settings
        counts = snapshot.breakdown.counts if snapshot.breakdown else {}
        self.continents = vm.continent_columns(counts)

        self.banner = _div(BANNER_CSS, "jp-redis-banner", visible=False, name="redis-banner")
        self.status = _div(STATUS_CSS, "jp-health", name="health")
        self.cards = _div(CARD_CSS, "jp-headline", name="headline")
        self.empty_note = _div(EMPTY_CSS, "jp-empty-note", name="empty-note")

        self.table_source = ColumnDataSource(vm.table_columns(counts), name="breakdown-source")
        self.table = DataTable(
            source=self.table_source,
            columns=self._table_columns(),
            index_position=None,
            sortable=False,
            reorderable=False,
            selectable=False,
            sizing_mode="stretch_width",
            height=330,
            row_height=28,
            css_classes=["jp-breakdown-table"],
            name="breakdown-table",
        )

        self.bar_source = ColumnDataSource(vm.stacked_bar_columns(counts), name="bar-source")
        self.bars = self._bar_figure()

        self.trend_source = ColumnDataSource(
            vm.trend_columns(list(snapshot.windows), self.continents), name="trend-source"
        )
        self.opened_chart = self._trend_figure("opened", "Offers opened per window")
        self.closed_chart = self._trend_figure("closed", "Offers closed per window")

        self.partition_source = ColumnDataSource(
            vm.partition_columns(
                snapshot.partitions, snapshot.high_watermarks, settings.partitions
            ),
            name="partition-source",
        )
        self.partition_table = DataTable(
            source=self.partition_source,
            columns=[
                TableColumn(field="partition", title="Partition", width=70),
                TableColumn(field="offset", title="Processed offset", formatter=COUNT),
                TableColumn(field="end", title="End offset (Kafka)", formatter=COUNT),
                TableColumn(field="lag", title="Lag", formatter=BOLD_COUNT),
                TableColumn(field="records", title="Records", formatter=COUNT),
                TableColumn(field="dlq", title="DLQ", formatter=COUNT),
            ],
            index_position=None,
            sortable=False,
            selectable=False,
            sizing_mode="stretch_width",
            height=min(60 + 26 * max(settings.partitions, 1), 400),
            row_height=26,
            css_classes=["jp-partition-table"],
            name="partition-table",
        )
        self.apply(snapshot)

    # -- layout ------------------------------------------------------------------------
    def _table_columns(self) -> list[TableColumn]:
        columns = [
            TableColumn(
                field=vm.CATEGORY_COLUMN,
                title="Category",
                width=150,
                formatter=StringFormatter(font_style="bold"),
            )
        ]
        columns += [
            TableColumn(field=c, title=SHORT_NAMES.get(c, c), formatter=COUNT, width=82)
            for c in self.continents
        ]
        columns.append(
            TableColumn(field=vm.TOTAL_COLUMN, title="Total", formatter=BOLD_COUNT, width=70)
        )
        return columns

    def _bar_figure(self) -> Any:
        fig = figure(
            x_range=FactorRange(*self.continents),
            height=330,
            sizing_mode="stretch_width",
            title="Open offers per continent, by category",
            toolbar_location=None,
            tools="",
            name="bar-chart",
        )
        fig.vbar(
            x="continent",
            bottom="bottom",
            top="top",
            width=0.8,
            color="color",
            legend_field="category",
            source=self.bar_source,
        )
        fig.add_tools(HoverTool(tooltips=[("", "@category, @continent: @n{0,0}")]))
        fig.y_range.start = 0
        fig.xgrid.grid_line_color = None
        fig.xaxis.major_label_orientation = 0.5
        fig.legend.location = "top_left"
        fig.legend.label_text_font_size = "11px"
        fig.legend.background_fill_alpha = 0.7
        return fig

    def _trend_figure(self, kind: str, title: str) -> Any:
        fig = figure(
            x_axis_type="datetime",
            height=260,
            sizing_mode="stretch_width",
            title=f"{title} ({self.settings.window_seconds} s windows), per continent",
            toolbar_location=None,
            tools="",
            name=f"{kind}-trend",
        )
        for continent in self.continents:
            style = {
                "x": "start",
                "y": vm.trend_key(kind, continent),
                "source": self.trend_source,
                "color": vm.CONTINENT_COLORS.get(continent, vm.UNKNOWN_COLOR),
                "legend_label": continent,
            }
            fig.line(line_width=2, **style)
            fig.scatter(size=5, **style)  # a lone window is a point, not an invisible line
        # With one window the axis would span microseconds: show ten windows at least.
        fig.x_range.default_span = 10 * self.settings.window_seconds * 1000
        fig.y_range.start = 0
        fig.legend.location = "top_left"
        fig.legend.label_text_font_size = "10px"
        fig.legend.background_fill_alpha = 0.6
        fig.legend.spacing = 0
        fig.legend.padding = 4
        return fig

    def layout(self) -> pn.viewable.Viewable:
        card = {"sizing_mode": "stretch_width"}
        return pn.Column(
            pn.pane.Markdown(f"# {TITLE}", margin=(0, 10)),
            pn.pane.Bokeh(self.status, **card),
            pn.pane.Bokeh(self.banner, **card),
            pn.pane.Bokeh(self.cards, **card),
            pn.Row(
                pn.Column(
                    pn.pane.Markdown("### Open offers: category × continent", margin=(0, 10)),
                    pn.pane.Bokeh(self.empty_note, **card),
                    pn.pane.Bokeh(self.table, **card),
                    sizing_mode="stretch_width",
                ),
                pn.pane.Bokeh(self.bars, **card),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.pane.Bokeh(self.opened_chart, **card),
                pn.pane.Bokeh(self.closed_chart, **card),
                sizing_mode="stretch_width",
            ),
            pn.pane.Markdown("### Pipeline: offers partitions", margin=(0, 10)),
            pn.pane.Bokeh(self.partition_table, **card),
            sizing_mode="stretch_width",
            styles={"background": "#f6f8fa", "padding": "8px"},
        )

    # -- updates -----------------------------------------------------------------------
    def apply(self, snapshot: vm.Snapshot) -> None:
        """Bring every model up to ``snapshot``, sending only what changed."""
        counts = snapshot.breakdown.counts if snapshot.breakdown else {}
        continents = vm.continent_columns(counts)
        if continents != self.continents:  # an unexpected continent name appeared
            self.continents = continents
            self.table.columns = self._table_columns()
            self.bars.x_range.factors = continents
        if _update_source(self.table_source, vm.table_columns(counts)):
            _refresh_table(self.table)
        _update_source(self.bar_source, vm.stacked_bar_columns(counts))
        self._apply_trends(snapshot.windows)
        partitions = vm.partition_columns(
            snapshot.partitions, snapshot.high_watermarks, self.settings.partitions
        )
        if _update_source(self.partition_source, partitions):
            _refresh_table(self.partition_table)
        _set_text(self.cards, headline_html(vm.headline(snapshot)))
        _set_text(self.status, status_html(snapshot, self.settings, time.time()))
        _set_text(
            self.empty_note,
            "" if counts else '<span data-testid="empty-note">No open offers yet.</span>',
        )
        self.empty_note.visible = not counts
        banner = banner_html(snapshot, self.settings)
        _set_text(self.banner, banner)
        if self.banner.visible != bool(banner):
            self.banner.visible = bool(banner)

    def _apply_trends(self, windows: Sequence[vm.WindowCounts]) -> None:
        new = vm.trend_columns(list(windows), self.continents)
        update = vm.series_update(
            self.trend_source.data, new, key="start", rollover=max(len(new["start"]), 1)
        )
        if update.replace is not None:
            self.trend_source.data = update.replace
            return
        if update.patches:
            self.trend_source.patch(update.patches)
        if update.stream:
            self.trend_source.stream(update.stream, rollover=len(new["start"]))


def _update_source(source: ColumnDataSource, new: vm.Columns) -> bool:
    """Patch the changed cells, or swap the data when rows or columns changed.

    Returns whether anything changed.
    """
    if vm.same_shape(source.data, new):
        patches = vm.column_patches(source.data, new)
        if patches:
            source.patch(patches)
        return bool(patches)
    source.data = new
    return True


def _refresh_table(table: DataTable) -> None:
    """Make the browser redraw a DataTable whose source changed.

    BokehJS's DataTable redraws only when its CDSView's indices change, so a patch or a data
    swap of the same length leaves stale cells on screen (bokeh/bokeh#13859); any change
    of a table property makes it redraw from the (already updated) source. ``tags`` is
    sent as a tiny property change; the data itself went as the patch.
    """
    table.tags = [int(table.tags[0]) + 1 if table.tags else 1]


def _set_text(div: Div, text: str) -> None:
    if div.text != text:
        div.text = text


# -- HTML fragments (the numbers carry data-testid hooks for the browser tests) ---------
def _card(label: str, testid: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="jp-sub">{html.escape(sub)}</div>' if sub else ""
    return (
        f'<div class="jp-card"><div class="jp-label">{html.escape(label)}</div>'
        f'<div class="jp-value" data-testid="{testid}">{html.escape(value)}</div>{sub_html}</div>'
    )


def headline_html(h: vm.Headline) -> str:
    rate = "–" if h.records_per_s is None else f"{h.records_per_s:,.1f}"
    window = f"window from {vm.format_window(h.window_start_ms)}"
    return (
        '<div class="jp-cards">'
        + _card("Open offers", "open-offers", f"{h.open_offers:,}")
        + _card("Opened, last window", "opened-last-window", f"{h.opened_last_window:,}", window)
        + _card("Closed, last window", "closed-last-window", f"{h.closed_last_window:,}", window)
        + _card("Records/s", "records-per-s", rate, f"{h.records:,} records read")
        + _card(
            "Dead-lettered",
            "dlq-count",
            f"{h.dlq:,}",
            f"{h.late:,} late · {h.unknown_deletes:,} unknown deletes",
        )
        + "</div>"
    )


def _dot(ok: bool | None) -> str:
    css = "jp-unknown" if ok is None else "jp-ok" if ok else "jp-down"
    return f'<span class="jp-dot {css}"></span>'


def status_html(snapshot: vm.Snapshot, settings: Settings, now: float) -> str:
    """Redis / Kafka reachability, time since the last dataflow write, total lag."""
    updated = vm.parse_updated_at(snapshot.breakdown.updated_at if snapshot.breakdown else None)
    age = vm.age_text(None if updated is None else max(now - updated, 0.0))
    redis_state = "reachable" if snapshot.redis_ok else "unreachable"
    kafka_state = {None: "checking…", True: "reachable", False: "unreachable"}[snapshot.kafka_ok]
    if snapshot.kafka_ok and snapshot.offers_topic_missing:
        kafka_state = (
            'reachable, <b data-testid="topic-missing">offers topic missing</b> '
            f"({html.escape(settings.offers_topic)})"
        )
    lag = vm.total_lag(
        vm.partition_columns(snapshot.partitions, snapshot.high_watermarks, settings.partitions)
    )
    version = snapshot.breakdown.version if snapshot.breakdown else 0
    return (
        '<div class="jp-status">'
        f'<span data-testid="redis-status" data-ok="{str(snapshot.redis_ok).lower()}">'
        f"{_dot(snapshot.redis_ok)}Redis {redis_state}</span>"
        f'<span data-testid="kafka-status" data-ok="{str(snapshot.kafka_ok).lower()}" '
        f'data-topic-missing="{str(snapshot.offers_topic_missing).lower()}">'
        f"{_dot(False if snapshot.offers_topic_missing else snapshot.kafka_ok)}Kafka {kafka_state}"
        "</span>"
        f'<span>Last update: <b data-testid="last-update">{html.escape(age)}</b></span>'
        f'<span>Total lag: <b data-testid="total-lag">{"–" if lag is None else f"{lag:,}"}</b>'
        "</span>"
        f'<span>Version <b data-testid="version">{version}</b></span>'
        f"<span>{html.escape(settings.offers_topic)} · prefix "
        f"{html.escape(settings.redis_prefix)}</span>"
        "</div>"
    )


def banner_html(snapshot: vm.Snapshot, settings: Settings) -> str:
    """The "Redis unavailable" banner, or ``""`` when Redis answers."""
    if snapshot.redis_ok:
        return ""
    detail = f" ({snapshot.redis_error})" if snapshot.redis_error else ""
    return (
        f'<div class="jp-banner" data-testid="redis-banner">Redis unavailable at '
        f"{html.escape(_redacted(settings.redis_url))}{html.escape(detail)} — retrying every "
        "second; the numbers below are the last ones read.</div>"
    )


def _redacted(url: str) -> str:
    """The Redis URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


# -- wiring a session to the feed -------------------------------------------------------
class _SessionLink:
    """Forwards feed snapshots into one document, coalescing while one is pending."""

    def __init__(self, doc: Document, session: DashboardSession) -> None:
        self.doc = doc
        self.session = session
        self._lock = threading.Lock()
        self._pending: vm.Snapshot | None = None
        self._scheduled = False
        self.unsubscribe: Callable[[], None] = lambda: None

    def offer(self, snapshot: vm.Snapshot) -> None:
        """Called on the feed thread: remember the newest snapshot, schedule one apply."""
        with self._lock:
            self._pending = snapshot
            if self._scheduled:
                return
            self._scheduled = True
        self.doc.add_next_tick_callback(self._flush)

    def _flush(self) -> None:
        with self._lock:
            snapshot, self._pending, self._scheduled = self._pending, None, False
        if snapshot is not None:
            self.session.apply(snapshot)


def build_app(feed: Feed, settings: Settings) -> pn.viewable.Viewable:
    """The page of one browser session, subscribed to ``feed`` until the session closes."""
    session = DashboardSession(settings, feed.latest)
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        link = _SessionLink(doc, session)
        link.unsubscribe = feed.subscribe(link.offer)
        pn.state.on_session_destroyed(lambda _ctx: link.unsubscribe())
    return session.layout()
