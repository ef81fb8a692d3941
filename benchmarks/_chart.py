"""A small SVG renderer for benchmark charts: panels of grouped horizontal bars.

The project takes no plotting dependency for its benchmark charts: a chart of
a few dozen bars is a few dozen ``<rect>`` and ``<text>`` elements, written
here by hand. Each panel has its own scale (starting at zero) and one group of
bars per row label (an event kind, say), one bar per series (a sender), in the
same colour in every panel, with its value written at its end.

Not a benchmark itself; ``bench_e2e.py --chart PATH`` calls ``render``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

#: Series colours, colour-blind safe (Okabe-Ito), in series order.
COLOURS = ("#0072B2", "#E69F00", "#999999", "#009E73", "#CC79A7", "#56B4E9")

WIDTH = 760
LEFT = 92  # room for the group labels
RIGHT = 150  # room for the value written after the longest bar
BAR = 14
BAR_GAP = 2
GROUP_GAP = 12
MARK = "#D55E00"
FONT = "font-family='Helvetica, Arial, sans-serif'"


@dataclass
class Panel:
    """One panel: ``values[group][series]`` (None: no bar), and how to write a
    value (``unit`` follows the number; ``notes[group][series]`` after it)."""

    title: str
    groups: Sequence[str]
    values: Sequence[Sequence[float | None]]
    digits: int = 1
    unit: str = ""
    notes: Sequence[Sequence[str]] = field(default_factory=list)
    #: Per group, a value marked by a dashed line across the group (a target).
    marks: Sequence[float | None] = field(default_factory=list)


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _ticks(top: float) -> list[float]:
    """Round tick values from zero up to ``top``, about four of them."""
    raw = top / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = math.floor(top / step + 1e-9)
    return [i * step for i in range(count + 1)]


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in attrs.items())
    return f"<text x='{x:.1f}' y='{y:.1f}' {FONT}{extra}>{escape(text)}</text>"


def _panel(panel: Panel, series: int, top_y: float) -> tuple[list[str], float]:
    """The elements of one panel whose title's baseline is at ``top_y``; returns
    them and the y just below the panel."""
    out = [_text(LEFT, top_y, panel.title, font_size="13", font_weight="bold")]
    plot_w = WIDTH - LEFT - RIGHT
    highest = max(
        [v for row in panel.values for v in row if v is not None]
        + [m for m in panel.marks if m is not None],
        default=0.0,
    )
    highest = highest if highest > 0 else 1.0
    ticks = _ticks(highest)
    scale = plot_w / highest
    y0 = top_y + 10
    group_h = series * (BAR + BAR_GAP) - BAR_GAP
    bottom = y0 + len(panel.groups) * (group_h + GROUP_GAP) - GROUP_GAP
    for tick in ticks:
        x = LEFT + tick * scale
        out.append(
            f"<line x1='{x:.1f}' y1='{y0 - 2:.1f}' x2='{x:.1f}' y2='{bottom + 2:.1f}' "
            "stroke='#e3e3e3' stroke-width='1'/>"
        )
        digits = 0 if tick == int(tick) else 1
        out.append(
            _text(
                x,
                bottom + 15,
                _number(tick, digits),
                font_size="10",
                fill="#666",
                text_anchor="middle",
            )
        )
    y = y0
    for g, name in enumerate(panel.groups):
        out.append(
            _text(
                LEFT - 8,
                y + group_h / 2 + 4,
                name,
                font_size="12",
                text_anchor="end",
            )
        )
        for s in range(series):
            value = panel.values[g][s] if s < len(panel.values[g]) else None
            if value is not None:
                w = max(1.0, value * scale)
                out.append(
                    f"<rect x='{LEFT}' y='{y:.1f}' width='{w:.1f}' height='{BAR}' "
                    f"fill='{COLOURS[s % len(COLOURS)]}'/>"
                )
                label = _number(value, panel.digits) + panel.unit
                if panel.notes and panel.notes[g][s]:
                    label += f" {panel.notes[g][s]}"
                out.append(
                    _text(
                        LEFT + w + 4, y + BAR - 3, label, font_size="10.5", fill="#333"
                    )
                )
            y += BAR + BAR_GAP
        mark = panel.marks[g] if g < len(panel.marks) else None
        if mark is not None:
            x = LEFT + mark * scale
            out.append(
                f"<line x1='{x:.1f}' y1='{y - group_h - BAR_GAP - 3:.1f}' "
                f"x2='{x:.1f}' y2='{y - BAR_GAP + 3:.1f}' stroke='{MARK}' "
                "stroke-width='1.5' stroke-dasharray='4 3'/>"
            )
        y += GROUP_GAP - BAR_GAP
    out.append(
        f"<line x1='{LEFT}' y1='{y0 - 2:.1f}' x2='{LEFT}' y2='{bottom + 2:.1f}' "
        "stroke='#888' stroke-width='1'/>"
    )
    return out, bottom + 24


def render(
    *,
    title: str,
    series: Sequence[str],
    panels: Sequence[Panel],
    footer: Sequence[str] = (),
    mark_label: str | None = None,
) -> str:
    """The SVG document: a title, a legend of ``series`` (and of the panels'
    dashed marks, as ``mark_label``), the panels one under another, and
    ``footer`` lines (what was measured, and the command)."""
    body: list[str] = [_text(12, 22, title, font_size="15", font_weight="bold")]
    x = 12.0
    for s, name in enumerate(series):
        body.append(
            f"<rect x='{x:.1f}' y='34' width='12' height='12' "
            f"fill='{COLOURS[s % len(COLOURS)]}'/>"
        )
        body.append(_text(x + 17, 44.5, name, font_size="12"))
        x += 17 + 7.2 * len(name) + 18
    if mark_label:
        body.append(
            f"<line x1='{x:.1f}' y1='40' x2='{x + 12:.1f}' y2='40' stroke='{MARK}' "
            "stroke-width='1.5' stroke-dasharray='4 3'/>"
        )
        body.append(_text(x + 17, 44.5, mark_label, font_size="12"))
    y = 76.0
    for panel in panels:
        elements, y = _panel(panel, len(series), y)
        body += elements
        y += 18
    for line in footer:
        body.append(_text(12, y, line, font_size="10", fill="#555"))
        y += 14
    height = math.ceil(y + 4)
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}'>\n"
        f"<rect width='{WIDTH}' height='{height}' fill='white'/>\n"
        + "\n".join(body)
        + "\n</svg>\n"
    )
