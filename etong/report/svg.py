"""Inline SVG charts for the HTML page: no script, no external file, printable."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

_BAR = "#2f6690"
_SECOND = "#e07a1f"


def bar_chart(items: Sequence[tuple[str, int]], width: int = 420) -> str:
    """Horizontal bars, one per (label, value), the value printed at the bar's end."""
    top = max((v for _, v in items), default=0) or 1
    label_w, row_h = 200, 18
    bars = []
    for i, (label, value) in enumerate(items):
        y = i * row_h
        w = (width - label_w - 40) * value / top
        bars.append(
            f'<text x="0" y="{y + 12}">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="12" fill="{_BAR}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value}</text>'
        )
    height = row_h * len(items) + 4
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">{"".join(bars)}</svg>'
    )


def series_chart(
    points: Sequence[tuple[str, int, int]], legend: tuple[str, str], width: int = 680
) -> str:
    """Paired columns per day or week: (label, first value, second value)."""
    height, left, bottom, top_pad = 170, 34, 28, 22
    top = max((max(a, b) for _, a, b in points), default=0) or 1
    n = max(1, len(points))
    step = (width - left - 4) / n
    bar_w = min(18.0, max(1.0, step * 0.4))  # one day alone is not a wall of colour
    plot_h = height - bottom - top_pad
    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#889"/>',
        f'<text x="2" y="{top_pad + 8}">{top}</text>',
        f'<text x="2" y="{height - bottom}">0</text>',
        f'<rect x="{left}" y="4" width="10" height="10" fill="{_BAR}"/>'
        f'<text x="{left + 14}" y="13">{escape(legend[0])}</text>',
        f'<rect x="{left + 170}" y="4" width="10" height="10" fill="{_SECOND}"/>'
        f'<text x="{left + 184}" y="13">{escape(legend[1])}</text>',
    ]
    every = max(1, n // 10)
    for i, (label, a, b) in enumerate(points):
        x = left + i * step
        for j, (value, colour) in enumerate(((a, _BAR), (b, _SECOND))):
            h = plot_h * value / top
            parts.append(
                f'<rect x="{x + j * bar_w:.1f}" y="{height - bottom - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"/>'
            )
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 14}">{escape(label[5:])}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">{"".join(parts)}</svg>'
    )
