"""The page: one :class:`DashboardSession` per browser tab, fed by the shared feed.

Plain Bokeh models in the session's document, served by Panel's server (:class:`PageFactory`:
an empty page at once, the page's models built off the IO loop once the browser shows it).
Every dynamic part is a Bokeh model owned by the session (``ColumnDataSource`` for the
tables and charts, ``Div`` for the numbers); no model is shared between sessions. The feed
thread hands each session a snapshot; the session schedules :meth:`DashboardSession.apply`
on its own document with ``doc.add_next_tick_callback`` (the one thread-safe entry into a
Bokeh document), and ``apply`` sends only what changed: ``patch`` for changed cells (and
trend lines), a ``data`` swap only when the shape changed (a new category, a new window, a
reset).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from bokeh.core.property.vectorization import field
from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.models import (
    BoxAnnotation,
    Column,
    ColumnDataSource,
    DataTable,
    Div,
    FactorRange,
    GlyphRenderer,
    HoverTool,
    LayoutDOM,
    Legend,
    LegendItem,
    MultiLine,
    NumberFormatter,
    Row,
    Scatter,
    StringEditor,
    StringFormatter,
    TableColumn,
    VBar,
)
from bokeh.plotting import figure
from tornado.ioloop import IOLoop

from jobpulse import breakdown as breakdown_table
from jobpulse import metrics
from jobpulse.dashboard import view_model as vm
from jobpulse.dashboard.feed import Feed
from jobpulse.settings import Settings

log = logging.getLogger(__name__)

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
.jp-error { color: #8a1c12; }
"""
BANNER_CSS = """
.jp-banner { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd;
  border-radius: 6px; padding: 10px 14px; font-size: 15px; font-weight: 600; }
"""
EMPTY_CSS = ".jp-empty { color: #5b6b7b; font-style: italic; padding: 4px 2px; }"
#: The page's headings, as Panel's Markdown pane used to render them.
HEADING_CSS = """
h1, h3 { color: #212529; font-weight: 700; }
h1 { font-size: 24px; margin: 8.16px 0; }
h3 { font-size: 14.04px; margin: 7.02px 0; }
"""
PAGE_BACKGROUND = "#f6f8fa"
TEXT_COLOR = "#212529"
LOADING_HTML = '<span class="jp-empty" data-testid="loading">Loading…</span>'

#: Every column after the first holds numbers: right-aligned, headers included, whatever
#: the formatter does with an empty or missing value. (A CSS string, not a stylesheet model:
#: see :func:`count_formatter` for why no Bokeh model is shared between sessions.)
TABLE_CSS = (
    ".slick-cell:not(.l0) { text-align: right; }"
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
#: A coordinate that is never drawn.
NAN = float("nan")


def count_formatter(*, bold: bool = False) -> NumberFormatter:
    """A right-aligned count with thousands separators; ``None`` (not known yet) is "–".

    A new one per table: a Bokeh model belongs to one document, and Bokeh wipes every model
    of a document when its session is discarded (a closed tab), so a model shared between
    sessions would reach the next pages emptied.
    """
    style = "bold" if bold else "normal"
    return NumberFormatter(format="0,0", text_align="right", font_style=style, null_format="–")


def _div(css: str, css_class: str, text: str = "", **kwargs: Any) -> Div:
    return Div(
        text=text,
        stylesheets=[css],
        css_classes=[css_class],
        sizing_mode="stretch_width",
        **kwargs,
    )


def heading(text: str, level: int = 3) -> Div:
    """A heading (``<h1>`` or ``<h3>``), styled as the page's headings have always been."""
    return Div(
        text=f"<h{level}>{html.escape(text)}</h{level}>",
        stylesheets=[HEADING_CSS],
        margin=(0, 10),
        sizing_mode="stretch_width",
    )


def page_shell() -> Column:
    """A page before its models are built: the title and "Loading…" on the page background.

    Each session's document gets this at once (it costs next to nothing); its
    :class:`DashboardSession` is built off the IO loop and replaces the note when ready.
    """
    return Column(
        children=[heading(TITLE, level=1), _div(EMPTY_CSS, "jp-loading", text=LOADING_HTML)],
        sizing_mode="stretch_width",
        styles={"background": PAGE_BACKGROUND, "padding": "8px", "color": TEXT_COLOR},
        name="page",
    )


class DashboardSession:
    """The Bokeh models of one browser session and how a snapshot updates them."""

    def __init__(self, settings: Settings, snapshot: vm.Snapshot) -> None:
        self.settings = settings
        counts = snapshot.breakdown.counts if snapshot.breakdown else {}
        self.continents = breakdown_table.continent_columns(counts)
        self.category_width = _category_width(counts)

        self.banner = _div(BANNER_CSS, "jp-redis-banner", visible=False, name="redis-banner")
        self.status = _div(STATUS_CSS, "jp-health", name="health")
        # One Div of HTML cards (headline_html), not five pn.indicators.Number: measured, those
        # make 209 models per page instead of 189 (an HTML model and three stylesheets each),
        # have no line under the number nor data-testid hook, and even styled as cards they
        # look different (label colour, weight, spacing). Both update well within 1 s.
        self.cards = _div(CARD_CSS, "jp-headline", name="headline")
        self.empty_note = _div(EMPTY_CSS, "jp-empty-note", name="empty-note")

        # Shared by the columns of this session's tables (a model per column costs page loads;
        # nothing is edited).
        self.editor = StringEditor()
        self.count = count_formatter()
        self.bold_count = count_formatter(bold=True)
        self.category_format = StringFormatter(font_style="bold")
        self.table_source = ColumnDataSource(
            breakdown_table.table_columns(counts, known=not vm.redis_never_read(snapshot)),
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

        # Both trend charts draw from two sources: one line per continent (a row each,
        # see line_columns) and every point (see dot_columns).
        self.trend_continents = list(self.continents)
        trend = vm.trend_columns(list(snapshot.windows), self.trend_continents)
        self.line_source = ColumnDataSource(
            line_columns(trend, self.trend_continents), name="trend-lines"
        )
        self.dot_source = ColumnDataSource(
            dot_columns(trend, self.trend_continents), name="trend-dots"
        )
        self.filling_marks: list[tuple[BoxAnnotation, LegendItem]] = []
        self.opened_chart = self._trend_figure("opened", "Offers opened per window")
        self.closed_chart = self._trend_figure("closed", "Offers closed per window")

        self.partition_source = ColumnDataSource(
            _partition_columns(snapshot, settings), name="partition-source"
        )
        count, bold_count = self.count, self.bold_count
        self.partition_table = DataTable(
            source=self.partition_source,
            stylesheets=[TABLE_CSS],
            columns=[
                self._column("partition", "Partition", width=70),
                self._column("offset", "Processed offset", formatter=count),
                self._column("end", "End offset (Kafka)", formatter=count),
                self._column("lag", "Lag", formatter=bold_count),
                self._column("records", "Records", formatter=count),
                self._column("dlq", "DLQ", formatter=count),
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
    def _column(self, field: str, title: str, **options: Any) -> TableColumn:
        """A table column with this session's (shared, unused) cell editor."""
        return TableColumn(field=field, title=title, editor=self.editor, **options)

    def _table_columns(self) -> list[TableColumn]:
        columns = [
            self._column(
                breakdown_table.CATEGORY_COLUMN,
                "Category",
                width=self.category_width,
                formatter=self.category_format,
            )
        ]
        columns += [
            self._column(c, breakdown_table.continent_label(c), formatter=self.count, width=66)
            for c in self.continents
        ]
        columns.append(
            self._column(breakdown_table.TOTAL_COLUMN, "Total", formatter=self.bold_count, width=70)
        )
        return columns

    def _bar_figure(self) -> Any:
        """Open offers per continent, stacked by category, legend on the right."""
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
        glyph = VBar(
            x="continent",
            bottom="bottom",
            top="top",
            width=0.8,
            fill_color=field("color"),
            line_color=field("color"),
        )
        bars = _renderer(fig, self.bar_source, glyph)
        fig.add_tools(HoverTool(tooltips=[("", "@category, @continent: @n{0,0}")]))
        fig.y_range.start = 0
        fig.xgrid.grid_line_color = None
        fig.xaxis.major_label_orientation = 0.5
        # One entry per category (BokehJS groups the rows by their ``category``).
        _legend_outside(fig, [LegendItem(label=field("category"), renderers=[bars])], "11px")
        return fig

    def _trend_figure(self, kind: str, title: str) -> Any:
        """Offers ``kind`` ("opened" or "closed") per window and continent."""
        fig = figure(
            x_axis_type="datetime",
            height=260,
            sizing_mode="stretch_width",
            title=f"{title} ({self.settings.window_seconds} s windows), per continent",
            toolbar_location=None,
            tools="",
            name=f"{kind}-trend",
        )
        # One renderer per kind of mark, not per continent: each renderer (and its glyph)
        # costs every page load.
        lines = _renderer(
            fig,
            self.line_source,
            MultiLine(xs="xs", ys=kind, line_color=field("color"), line_width=2),
        )
        # A lone window is a point, not an invisible line.
        dots = _renderer(
            fig,
            self.dot_source,
            Scatter(
                x="start",
                y=kind,
                marker=field("marker"),
                size=field("size"),
                fill_color=field("color"),
                line_color=field("color"),
            ),
        )
        # Continent ``i``'s legend entry draws row ``i`` of both: its line and a point.
        items = [
            LegendItem(label=continent, renderers=[lines, dots], index=index)
            for index, continent in enumerate(self.trend_continents)
        ]
        # The axes follow the data only (not the filling-window mark below, nor the points'
        # legend rows); the lines go through every point.
        fig.x_range.renderers = fig.y_range.renderers = [lines]
        # With one window the axis would span microseconds: show ten windows at least.
        fig.x_range.default_span = 10 * self.settings.window_seconds * 1000
        fig.y_range.start = 0
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
        # A legend entry explains the shading (annotations have none of their own): it draws
        # the square that row len(continents) of the points holds (never drawn on the plot).
        item = LegendItem(
            label="current window, still filling",
            renderers=[dots],
            index=len(self.trend_continents),
            visible=False,
        )
        _legend_outside(fig, [*items, item], "10px")
        self.filling_marks.append((box, item))
        return fig

    def children(self, title: Div) -> list[LayoutDOM]:
        """The page's rows, under ``title``: plain Bokeh layouts (see :func:`page_shell`)."""
        return [
            title,
            self.status,
            self.banner,
            self.cards,
            Row(
                children=[
                    Column(
                        children=[
                            heading("Open offers: category × continent"),
                            self.empty_note,
                            self.table,
                        ],
                        sizing_mode="stretch_width",
                    ),
                    self.bars,
                ],
                sizing_mode="stretch_width",
            ),
            Row(children=[self.opened_chart, self.closed_chart], sizing_mode="stretch_width"),
            heading("Pipeline: offers partitions"),
            self.partition_table,
        ]

    # -- updates -----------------------------------------------------------------------
    def apply(self, snapshot: vm.Snapshot) -> None:
        """Bring every model up to ``snapshot``, sending only what changed."""
        counts = snapshot.breakdown.counts if snapshot.breakdown else {}
        known = not vm.redis_never_read(snapshot)
        continents = breakdown_table.continent_columns(counts)
        category_width = _category_width(counts)
        if continents != self.continents or category_width != self.category_width:
            # An unexpected continent name, or a category label the column is too narrow for.
            if continents != self.continents:
                self.bars.x_range.factors = continents
            self.continents, self.category_width = continents, category_width
            self.table.columns = self._table_columns()
        if _update_source(self.table_source, breakdown_table.table_columns(counts, known=known)):
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
        """Patch the lines of the continents whose counts changed, and the changed points.

        (A new window changes every line, and the number of points: all of them are sent.)
        """
        trend = vm.trend_columns(list(windows), self.trend_continents)
        _update_source(self.line_source, line_columns(trend, self.trend_continents))
        dots = dot_columns(trend, self.trend_continents)
        _update_dots(self.dot_source, dots, legend_rows=len(self.trend_continents) + 1)


def line_columns(trend: Mapping[str, Sequence[Any]], continents: Sequence[str]) -> vm.Columns:
    """The trend charts' lines: a row per continent (``xs`` the window starts, ``opened`` and
    ``closed`` its counts per window, ``color``), for one ``multi_line`` per chart."""
    starts = list(trend["start"])
    return {
        "xs": [list(starts) for _ in continents],
        "opened": [list(trend[vm.trend_key("opened", c)]) for c in continents],
        "closed": [list(trend[vm.trend_key("closed", c)]) for c in continents],
        "color": [vm.CONTINENT_COLORS.get(c, vm.UNKNOWN_COLOR) for c in continents],
    }


def dot_columns(trend: Mapping[str, Sequence[Any]], continents: Sequence[str]) -> vm.Columns:
    """The trend charts' points as one long table (``start``, ``opened``, ``closed`` and how
    each is drawn: ``marker``, ``size``, ``color``), for one scatter per chart instead of one
    per continent: each renderer and glyph costs every page load.

    The first rows are never drawn (NaN coordinates): they are what the legend entries draw,
    one per continent (its colour; right before any window exists), then the square of the
    "current window, still filling" entry. Then one row per continent and window.
    """
    colors = [vm.CONTINENT_COLORS.get(c, vm.UNKNOWN_COLOR) for c in continents]
    legend = len(continents) + 1
    data: vm.Columns = {
        "start": [NAN] * legend,
        "opened": [NAN] * legend,
        "closed": [NAN] * legend,
        "marker": ["circle"] * len(continents) + ["square"],
        "size": [5] * len(continents) + [12],
        "color": [*colors, FILLING_FILL],
    }
    starts = list(trend["start"])
    for continent, color in zip(continents, colors, strict=True):
        data["start"] += starts
        data["marker"] += ["circle"] * len(starts)
        data["size"] += [5] * len(starts)
        data["color"] += [color] * len(starts)
        for kind in ("opened", "closed"):
            data[kind] += list(trend[vm.trend_key(kind, continent)])
    return data


def _update_dots(source: ColumnDataSource, new: vm.Columns, *, legend_rows: int) -> None:
    """:func:`_update_source` for :func:`dot_columns`, comparing the rows after the first
    ``legend_rows`` only (their NaN never equals itself, so they would always be patched)."""
    old = source.data
    if not vm.same_shape(old, new):
        source.data = new
        return
    patches = vm.column_patches(
        {k: list(v[legend_rows:]) for k, v in old.items()},
        {k: v[legend_rows:] for k, v in new.items()},
    )
    if patches:
        source.patch({k: [(legend_rows + i, v) for i, v in rows] for k, rows in patches.items()})


def _category_width(counts: Mapping[str, Mapping[str, int]]) -> int:
    """Category column width (px) that fits the longest label, at least the old 150."""
    return max(
        150, breakdown_table.longest_category(counts) * CATEGORY_CHAR_PX + CATEGORY_PADDING_PX
    )


def _partition_columns(snapshot: vm.Snapshot, settings: Settings) -> vm.Columns:
    return vm.partition_columns(
        snapshot.partitions,
        snapshot.high_watermarks,
        settings.partitions,
        known=not vm.redis_never_read(snapshot),
    )


def _renderer(fig: Any, source: ColumnDataSource, glyph: Any) -> GlyphRenderer:
    """Draw ``glyph`` from ``source`` on ``fig``: one renderer and one glyph model.

    (``figure.line`` and friends also make a selection-dimmed and a muted copy of every
    glyph; nothing here can be selected or muted, and each copy costs every page load.)
    """
    renderer = GlyphRenderer(data_source=source, glyph=glyph)
    fig.renderers.append(renderer)
    return renderer


def _legend_outside(fig: Any, items: list[LegendItem], font_size: str) -> None:
    """A legend of ``items`` right of the plot area, off the data."""
    legend = Legend(
        items=items, label_text_font_size=font_size, spacing=0, padding=4, border_line_alpha=0
    )
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
    if snapshot.kafka_ok is False and snapshot.kafka_error:
        # Why, as the feed wrote it: one line, secrets masked (feed.error_text).
        kafka_state += (
            f' <span class="jp-error" data-testid="kafka-error">'
            f"({html.escape(snapshot.kafka_error)})</span>"
        )
    if snapshot.kafka_ok and snapshot.offers_topic_missing:
        kafka_state = (
            'reachable, <b data-testid="topic-missing">offers topic missing</b> '
            f"({html.escape(settings.offers_topic)})"
        )
    lag = vm.total_lag(_partition_columns(snapshot, settings))
    version = snapshot.breakdown.version if snapshot.breakdown else "–"
    sink = ""
    if settings.rows_topic:  # the PostgreSQL sink runs beside the counting
        sink_lag = "–" if snapshot.sink_lag is None else f"{snapshot.sink_lag:,}"
        sink = f'<span>PostgreSQL sink lag: <b data-testid="sink-lag">{sink_lag}</b></span>'
    return (
        '<div class="jp-status">'
        f'<span data-testid="redis-status" data-ok="{str(snapshot.redis_ok).lower()}">'
        f"{_dot(snapshot.redis_ok)}Redis {redis_state}</span>"
        f'<span data-testid="kafka-status" data-ok="{str(snapshot.kafka_ok).lower()}" '
        f'data-topic-missing="{str(snapshot.offers_topic_missing).lower()}" '
        f'data-checks="{snapshot.kafka_checks}">'
        f"{_dot(False if snapshot.offers_topic_missing else snapshot.kafka_ok)}Kafka {kafka_state}"
        "</span>"
        f'<span>Last update: <b data-testid="last-update">{html.escape(age)}</b></span>'
        f'<span>Total lag: <b data-testid="total-lag">{"–" if lag is None else f"{lag:,}"}</b>'
        "</span>"
        f'<span>Version <b data-testid="version">{version}</b></span>'
        f"{sink}"
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
class PageFactory:
    """Gives each new session's document its page, without holding up the server's IO loop.

    Bokeh creates a session's document on the IO loop while answering ``GET /``. Building
    the few hundred Bokeh models of a page is a tenth of a second of pure Python, so twenty
    page loads at once kept the loop busy for seconds: ``/healthz`` and the updates of every
    open page waited behind them. Here the document gets :func:`page_shell` at once. When the
    browser has shown it (BokehJS's ``document_ready`` event, which comes over the page's
    websocket, so the models are built in the server process that serves that websocket and
    never for a page nobody opened), the page's :class:`DashboardSession` is built by the
    :class:`PageBuilder` thread and attached on the document's own tick.
    """

    def __init__(self, feed: Feed, settings: Settings) -> None:
        self.feed = feed
        self.settings = settings
        self.builder = PageBuilder()

    def __call__(self, doc: Document) -> None:
        """Called on the IO loop by Bokeh for every new session: the shell, then the build."""
        shell = page_shell()
        doc.title = TITLE
        doc.add_root(shell)
        link = SessionLink(doc, shell, self.feed, self.settings, IOLoop.current())
        doc.on_session_destroyed(link.close)
        doc.on_session_destroyed(_session_closed)
        metrics.DASHBOARD_SESSIONS.inc()
        metrics.DASHBOARD_SESSIONS_OPENED.inc()
        doc.on_event(DocumentReady, partial(link.shown, self.builder))

    def shutdown(self) -> None:
        """Drop the builds not started yet (the server is stopping)."""
        self.builder.shutdown()


def _session_closed(_session_context: object) -> None:
    """A session is gone: one fewer in ``jobpulse_dashboard_sessions``."""
    metrics.DASHBOARD_SESSIONS.dec()


class Turn:
    """A page's place between "build started" and "attached"; given back once, however."""

    def __init__(self, slots: threading.Semaphore, *, held: bool) -> None:
        self._slots = slots
        self._held = held
        self._lock = threading.Lock()

    def give_back(self) -> None:
        """Let the builder start the next page (only the first call counts)."""
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()


class PageBuilder:
    """One background thread building pages, each one through to the screen before the next.

    Building a page (here) and attaching and sending it (on the IO loop) take about as long
    as each other. A thread running ahead would pile finished pages up on the loop, attached
    back to back with ``/healthz`` waiting behind them; so the next build starts only when
    the previous page was attached (or dropped, its tab closed): the loop never has more than
    one page to attach.
    """

    #: Safety net: start the next build anyway after this long without the turn back.
    TURN_TIMEOUT_S = 10.0

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobpulse-page")
        self._slots = threading.Semaphore(1)

    def submit(self, job: Callable[[Turn], None]) -> None:
        """Run ``job(turn)`` on the builder thread when its turn comes; it gives it back."""
        self._executor.submit(self._run, job)

    def _run(self, job: Callable[[Turn], None]) -> None:
        held = self._slots.acquire(timeout=self.TURN_TIMEOUT_S)
        if not held:
            log.warning("a dashboard page was not attached within %.0f s", self.TURN_TIMEOUT_S)
        turn = Turn(self._slots, held=held)
        try:
            job(turn)
        except BaseException:
            turn.give_back()
            raise

    def shutdown(self) -> None:
        """Drop the builds not started yet (the server is stopping)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class SessionLink:
    """One session's page: built off the IO loop, then fed every snapshot on its own tick.

    Other threads never touch the document: they hand callbacks to the IO loop
    (``IOLoop.add_callback``, thread-safe), which checks that the session is still there and
    schedules them with ``doc.add_next_tick_callback`` (so they run under the document lock).
    Feed snapshots are coalesced while one is pending.
    """

    def __init__(
        self, doc: Document, shell: Column, feed: Feed, settings: Settings, loop: IOLoop
    ) -> None:
        self.doc = doc
        self.shell = shell
        self.feed = feed
        self.settings = settings
        self.loop = loop
        self.session: DashboardSession | None = None
        self._lock = threading.Lock()
        self._pending: vm.Snapshot | None = None
        self._scheduled = False
        self._closed = False
        self._building = False
        self._turn: Turn | None = None
        self._unsubscribe: Callable[[], None] = lambda: None

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self, session_context: object) -> None:
        """The session is gone (a closed tab): stop following the feed, drop its build.

        (``session_context`` is the argument Bokeh's session-destroyed callbacks get.)
        """
        with self._lock:
            self._closed = True
            turn, self._turn = self._turn, None
        if turn is not None:
            turn.give_back()
        self._unsubscribe()

    def shown(self, builder: PageBuilder, event: object) -> None:
        """The browser shows the shell (on the IO loop): build the page, once."""
        if not self._building:  # a reconnecting browser shows the document again
            self._building = True
            builder.submit(self.build)

    def build(self, turn: Turn) -> None:
        """On the builder thread: the page's models (in no document yet), then attach them."""
        with self._lock:
            if self._closed:
                turn.give_back()
                return
            self._turn = turn
        snapshot = self.feed.latest
        try:
            session = DashboardSession(self.settings, snapshot)
        except Exception:
            log.exception("could not build a dashboard page")
            turn.give_back()
            self._soon(self._show_failure)
            return
        self._soon(partial(self._attach, session, snapshot, turn), dropped=turn.give_back)

    def _attach(self, session: DashboardSession, built_from: vm.Snapshot, turn: Turn) -> None:
        """On the document's tick: show the page, follow the feed from now on."""
        try:
            self.session = session
            self.shell.children = session.children(self.shell.children[0])
            self._unsubscribe = self.feed.subscribe(self.offer)
            latest = self.feed.latest
            if latest is not built_from:  # it changed while the page was being built
                session.apply(latest)
        finally:
            turn.give_back()

    def _show_failure(self) -> None:
        note = self.shell.children[-1]
        if isinstance(note, Div):
            note.text = '<span class="jp-empty">This page could not be built: see the log.</span>'

    def offer(self, snapshot: vm.Snapshot) -> None:
        """Called on the feed thread: remember the newest snapshot, schedule one apply."""
        with self._lock:
            self._pending = snapshot
            if self._scheduled:
                return
            self._scheduled = True
        self._soon(self._flush)

    def _flush(self) -> None:
        with self._lock:
            snapshot, self._pending, self._scheduled = self._pending, None, False
        if snapshot is not None and self.session is not None:
            self.session.apply(snapshot)

    def _soon(
        self, callback: Callable[[], None], dropped: Callable[[], None] | None = None
    ) -> None:
        """Run ``callback`` on the document's next tick, from any thread; ``dropped()`` if
        the session is gone by then."""
        self.loop.add_callback(self._on_loop, callback, dropped)

    def _on_loop(self, callback: Callable[[], None], dropped: Callable[[], None] | None) -> None:
        # On the IO loop, where sessions are discarded: no race with the document's end.
        if self.closed or self.doc.session_context is None:
            if dropped is not None:
                dropped()
            return
        self.doc.add_next_tick_callback(callback)
