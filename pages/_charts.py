"""Plotly figures the pages draw, built from ``plotly.graph_objects`` directly.

``plotly.express`` costs ~65 ms of validation per figure (and its import pulls pandas in);
one trace per group built here costs ~8 ms for the same picture, which is most of a page's
cold load on a 2-core machine. Same look: one colour per group, the group's name in the
legend and the hover.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import polars as pl


def _hover(y_label: str, hover: Sequence[str], labels: Mapping[str, str]) -> str:
    lines = ["%{x}", f"{y_label} %{{y}}"]
    lines += [f"{labels.get(h, h)} %{{customdata[{i}]}}" for i, h in enumerate(hover)]
    return "<br>".join(lines)


def series(frame: pl.DataFrame, x: str, y: str, color: str | None = None, *,
           kind: str = "bar", hover: Sequence[str] = (), labels: Mapping[str, str] | None = None,
           markers: bool = False, colors: Mapping[str, str] | None = None,
           height: int = 260, **layout: Any) -> go.Figure:
    """``y`` over ``x``, one trace per value of ``color`` (bars stacked, or lines), with the
    ``hover`` columns in the tooltip and axis titles from ``labels`` (column → words)."""
    labels = dict(labels or {})
    groups: Iterable[tuple[str | None, pl.DataFrame]]
    if color is None:
        groups = [(None, frame)]
    else:
        groups = ((str(k[0]), g) for k, g in frame.group_by(color, maintain_order=True))
    y_label = labels.get(y, y)
    traces = []
    for name, g in groups:
        common: dict[str, Any] = dict(
            x=g[x].to_list(), y=g[y].to_list(), name=name, showlegend=name is not None,
            hovertemplate=_hover(y_label, hover, labels) + f"<extra>{name or ''}</extra>")
        if hover:
            common["customdata"] = g.select(hover).rows()
        if kind == "bar":
            traces.append(go.Bar(**common, marker_color=(colors or {}).get(name)))
        else:
            traces.append(go.Scatter(**common, mode="lines+markers" if markers else "lines",
                                     line_color=(colors or {}).get(name)))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), barmode="relative",
                      legend_title_text=labels.get(color, color) if color else None, **layout)
    fig.update_xaxes(title_text=labels.get(x, x))
    fig.update_yaxes(title_text=y_label)
    return fig


def timeline(frame: pl.DataFrame, start: str, end: str, y: str, color: str,
             colors: Mapping[str, str], hover: Sequence[str] = (),
             height: int = 400) -> go.Figure:
    """A Gantt chart: a horizontal bar per row from ``start`` to ``end`` (instants), one
    colour per value of ``color``."""
    frame = frame.with_columns(
        (pl.col(end) - pl.col(start)).dt.total_milliseconds().alias("_ms"))
    traces = []
    for (name,), g in frame.group_by(color, maintain_order=True):
        traces.append(go.Bar(
            base=g[start].to_list(), x=g["_ms"].to_list(), y=g[y].to_list(), orientation="h",
            name=str(name), marker_color=colors.get(name), customdata=g.select(
                [start, end, *hover]).rows(),
            hovertemplate="%{y}<br>%{customdata[0]} – %{customdata[1]}<br>"
            + "<br>".join(f"{h} %{{customdata[{i + 2}]}}" for i, h in enumerate(hover))
            + f"<extra>{name}</extra>"))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), barmode="overlay",
                      legend_title_text=color)
    fig.update_xaxes(type="date", title_text="UTC")
    fig.update_yaxes(autorange="reversed", title=None, type="category")
    return fig


def warm() -> None:
    """Load what plotly loads on first use of each trace type and of subplots (~0.2 s on a
    2-core machine), by building and serialising a throwaway figure: run at start-up, in the
    background, so no page's first visit pays for it."""
    import plotly.io as pio
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("a", "b"))
    fig.add_trace(go.Candlestick(x=[1], open=[1], high=[1], low=[1], close=[1]), row=1, col=1)
    fig.add_trace(go.Scatter(x=[1], y=[1], mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Bar(x=[1], y=[1], base=[0], orientation="v"), row=2, col=1)
    fig.add_trace(go.Heatmap(z=[[1]], customdata=[[1]]), row=2, col=1)
    fig.add_hline(y=1, row=2, col=1)
    fig.update_layout(height=100, legend=dict(orientation="h"), hovermode="x unified")
    fig.update_xaxes(rangebreaks=[dict(bounds=["sat", "mon"])], type="date")
    fig.update_yaxes(tickformat=".0%", fixedrange=True)
    pio.to_json(fig, validate=False)
    fig.to_dict()
