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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import panel as pn
from bokeh.document import Document
from bokeh.models import (
    BoxAnnotation,
    ColumnDataSource,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    InlineStyleSheet,
    LegendItem,
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
#: ``None`` is a number not known yet (Redis never read, Kafka not asked): shown as "–".
COUNT = NumberFormatter(format="0,0", text_align="right", null_format="–")
BOLD_COUNT = NumberFormatter(format="0,0", text_align="right", font_style="bold", null_format="–")
#: Every column after the first holds numbers: right-aligned, headers included, whatever
#: the formatter does with an empty or missing value.
TABLE_CSS = InlineStyleSheet(
    css=".slick-cell:not(.l0) { text-align: right; }"
    " .slick-header-column:not(:first-child) .slick-column-name { float: right; }"
)
#: Width of one character of the bold 13 px category labels, and the cell padding (px).
CATEGORY_CHAR_PX = 8
CATEGORY_PADDING_PX = 20
#: Width of the stacked bar chart; the breakdown table takes the rest of the row.
BAR_CHART_WIDTH = 560
#: Height of the breakdown table, and of the heading above it (with its margins).
TABLE_HEIGHT = 330
TABLE_HEADING_HEIGHT = 45
#: Shading of the newest window while it still fills up.
FILLING_FILL = "#dde3ea"


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
        self.category_width = _category_width(counts)

        self.banner = _div(BANNER_CSS, "jp-redis-banner", visible=False, name="redis-banner")
        self.status = _div(STATUS_CSS, "jp-health", name="health")
        self.cards = _div(CARD_CSS, "jp-headline", name="headline")
        self.empty_note = _div(EMPTY_CSS, "jp-empty-note", name="empty-note")

        self.table_source = ColumnDataSource(
            vm.table_columns(counts, known=not vm.redis_never_read(snapshot)),
            name="breakdown-source",
        )
        self.table = DataTable(
            source=self.table_source,
            columns=self._table_columns(),
            # Exact column widths: a force-fitted table shares its width out evenly when it
            # first renders, which clipped long category names.
            autosize_mode="none",
            stylesheets=[TABLE_CSS],
            index_position=None,
            sortable=False,
            reorderable=False,
            selectable=False,
            sizing_mode="stretch_width",
            height=TABLE_HEIGHT,
            row_height=28,
            css_classes=["jp-breakdown-table"],
            name="breakdown-table",
        )

        self.bar_source = ColumnDataSource(vm.stacked_bar_columns(counts), name="bar-source")
        self.bars = self._bar_figure()

        self.trend_source = ColumnDataSource(
            vm.trend_columns(list(snapshot.windows), self.continents), name="trend-source"
        )
        self.filling_marks: list[tuple[BoxAnnotation, LegendItem]] = []
        self.opened_chart = self._trend_figure("opened", "Offers opened per window")
        self.closed_chart = self._trend_figure("closed", "Offers closed per window")

        self.partition_source = ColumnDataSource(
            _partition_columns(snapshot, settings), name="partition-source"
        )
        self.partition_table = DataTable(
            source=self.partition_source,
            stylesheets=[TABLE_CSS],
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
                width=self.category_width,
                formatter=StringFormatter(font_style="bold"),
            )
        ]
        columns += [
            TableColumn(field=c, title=SHORT_NAMES.get(c, c), formatter=COUNT, width=66)
            for c in self.continents
        ]
        columns.append(
            TableColumn(field=vm.TOTAL_COLUMN, title="Total", formatter=BOLD_COUNT, width=70)
        )
        return columns

    def _bar_figure(self) -> Any:
        fig = figure(
            x_range=FactorRange(*self.continents),
            # As tall as the table column beside it (heading + table), so no blank band
            # opens between this row and the trend charts.
            height=TABLE_HEIGHT + TABLE_HEADING_HEIGHT,
            width=BAR_CHART_WIDTH,
            sizing_mode="fixed",
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
        _legend_outside(fig, font_size="11px")
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
        series = []
        for continent in self.continents:
            style = {
                "x": "start",
                "y": vm.trend_key(kind, continent),
                "source": self.trend_source,
                "color": vm.CONTINENT_COLORS.get(continent, vm.UNKNOWN_COLOR),
                "legend_label": continent,
            }
            series.append(fig.line(line_width=2, **style))
            # A lone window is a point, not an invisible line.
            series.append(fig.scatter(size=5, **style))
        # The axes follow the data only (not the filling-window mark below).
        fig.x_range.renderers = fig.y_range.renderers = series
        # With one window the axis would span microseconds: show ten windows at least.
        fig.x_range.default_span = 10 * self.settings.window_seconds * 1000
        fig.y_range.start = 0
        _legend_outside(fig, font_size="10px")
        # The newest window is still filling: shade it and say so, so its low point does
        # not read as a drop.
        box = BoxAnnotation(
            fill_color=FILLING_FILL,
            fill_alpha=0.6,
            line_alpha=0,
            level="underlay",  # under the lines, which stay fully visible
            visible=False,
        )
        fig.add_layout(box)
        # A legend entry explains the shading (annotations have none of their own).
        # (One NaN point: never drawn on the plot, but the legend has a glyph to show.)
        nowhere = [float("nan")]
        swatch = fig.scatter(x=nowhere, y=nowhere, marker="square", size=12, color=FILLING_FILL)
        item = LegendItem(label="current window, still filling", renderers=[swatch], visible=False)
        fig.legend[0].items.append(item)
        self.filling_marks.append((box, item))
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
                pn.pane.Bokeh(self.bars),
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
        known = not vm.redis_never_read(snapshot)
        continents = vm.continent_columns(counts)
        category_width = _category_width(counts)
        if continents != self.continents or category_width != self.category_width:
            # An unexpected continent name, or a category label the column is too narrow for.
            if continents != self.continents:
                self.bars.x_range.factors = continents
            self.continents, self.category_width = continents, category_width
            self.table.columns = self._table_columns()
        if _update_source(self.table_source, vm.table_columns(counts, known=known)):
            _refresh_table(self.table)
        _update_source(self.bar_source, vm.stacked_bar_columns(counts))
        self._apply_trends(snapshot.windows)
        self._mark_filling_window(snapshot.windows, time.time())
        if _update_source(self.partition_source, _partition_columns(snapshot, self.settings)):
            _refresh_table(self.partition_table)
        _set_text(self.cards, headline_html(vm.headline(snapshot)))
        _set_text(self.status, status_html(snapshot, self.settings, time.time()))
        # "No open offers yet." is for a Redis that answered and holds nothing.
        empty = known and not counts
        _set_text(
            self.empty_note,
            '<span data-testid="empty-note">No open offers yet.</span>' if empty else "",
        )
        self.empty_note.visible = empty
        banner = banner_html(snapshot, self.settings)
        _set_text(self.banner, banner)
        if self.banner.visible != bool(banner):
            self.banner.visible = bool(banner)

    def _mark_filling_window(self, windows: Sequence[vm.WindowCounts], now: float) -> None:
        """Shade the newest window on both trend charts while it is still filling."""
        window_ms = self.settings.window_seconds * 1000
        start = vm.filling_window(windows, self.settings.window_seconds, now)
        for box, item in self.filling_marks:
            if start is None:
                if box.visible:
                    box.visible = item.visible = False
                continue
            # The point sits at the window start: shade the segment that leads to it, and a
            # little past it.
            left, right = start - window_ms, start + window_ms // 2
            if (box.left, box.right, box.visible) != (left, right, True):
                box.update(left=left, right=right, visible=True)
                item.visible = True

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


def _category_width(counts: Mapping[str, Mapping[str, int]]) -> int:
    """Category column width (px) that fits the longest label, at least the old 150."""
    return max(150, vm.longest_category(counts) * CATEGORY_CHAR_PX + CATEGORY_PADDING_PX)


def _partition_columns(snapshot: vm.Snapshot, settings: Settings) -> vm.Columns:
    return vm.partition_columns(
        snapshot.partitions,
        snapshot.high_watermarks,
        settings.partitions,
        known=not vm.redis_never_read(snapshot),
    )


def _legend_outside(fig: Any, *, font_size: str) -> None:
    """Move the figure's legend to the right of the plot area, off the data."""
    legend = fig.legend[0]
    legend.label_text_font_size = font_size
    legend.spacing = 0
    legend.padding = 4
    legend.border_line_alpha = 0
    fig.add_layout(legend, "right")


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


def _n(value: int | None) -> str:
    """A count with thousands separators; "–" when it is not known."""
    return "–" if value is None else f"{value:,}"


def headline_html(h: vm.Headline) -> str:
    rate = "–" if h.records_per_s is None else f"{h.records_per_s:,.1f}"
    window = f"window from {vm.format_window(h.window_start_ms)}"
    return (
        '<div class="jp-cards">'
        + _card("Open offers", "open-offers", _n(h.open_offers))
        + _card("Opened, last window", "opened-last-window", _n(h.opened_last_window), window)
        + _card("Closed, last window", "closed-last-window", _n(h.closed_last_window), window)
        + _card("Records/s", "records-per-s", rate, f"{_n(h.records)} records read")
        + _card(
            "Dead-lettered",
            "dlq-count",
            _n(h.dlq),
            f"{_n(h.late)} late · {_n(h.stale)} stale · {_n(h.unknown_deletes)} unknown deletes",
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
    lag = vm.total_lag(_partition_columns(snapshot, settings))
    version = snapshot.breakdown.version if snapshot.breakdown else "–"
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
    shown = (
        "nothing has been read yet."
        if vm.redis_never_read(snapshot)
        else "the numbers below are the last ones read."
    )
    return (
        f'<div class="jp-banner" data-testid="redis-banner">Redis unavailable at '
        f"{html.escape(_redacted(settings.redis_url))}{html.escape(detail)} — retrying every "
        f"second; {shown}</div>"
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
