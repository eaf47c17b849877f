"""Charts the Dagster UI shows in place: an SVG as a data URI in a Markdown entry of under 1,000 characters.

The UI renders a Markdown entry inline only below 1,000 characters; a longer one (a matplotlib PNG) hides
behind a *Show Markdown* button. A line chart keeps its lines, their names, the axes' names and ranges, and
drops points (evenly, the last kept) and then the last series until it fits; the full figure goes to MLflow.
A heat map is a pixel a cell, drawn large, with its row names; when it cannot fit, the caller shows a PNG.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import dagster as dg
import numpy as np
from PIL import Image

INLINE_LIMIT = 1000  # characters of Markdown the UI renders in place
COLORS = ("#17b", "#e71", "#2a2", "#c22")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 300, 150, 30, 190, 8, 126  # SVG's default size; names at the right

HEAT_MAP_SCALE = "pale 0, black 1, white no value"

Points = Sequence[tuple[float, float]]


def line_chart(series: dict[str, Points], x_label: str, y_label: str, mark_x: float | None = None,
               max_points: int = 16) -> dg.MetadataValue:
    """`series` (name: (x, y) points, first the one that matters most) as an inline chart; `mark_x` circles
    each line's point at that x (the chosen k)."""
    shown = {name: list(points) for name, points in list(series.items())[:len(COLORS)] if points}
    if not shown:
        return dg.MetadataValue.text("nothing to plot")
    while True:
        markdown = _markdown(f"{y_label} by {x_label}", _svg(shown, x_label, y_label, mark_x, max_points))
        if len(markdown) < INLINE_LIMIT or (max_points <= 2 and len(shown) == 1):
            return dg.MetadataValue.md(markdown)
        if max_points > (6 if len(shown) > 1 else 2):  # lines of 6 points, then fewer lines, then fewer points
            max_points = max(max_points * 2 // 3, 2)
        else:
            shown.popitem()
            max_points = 16


def _thin(points: list[tuple[float, float]], n: int, mark_x: float | None) -> list[tuple[float, float]]:
    """`n` points evenly spaced, the first, the last and the marked one among them."""
    if len(points) <= n:
        return points
    step = (len(points) - 1) / (n - 1)
    kept = {round(i * step) for i in range(n)} | {i for i, (x, _) in enumerate(points) if x == mark_x}
    return [points[i] for i in sorted(kept)]


def _svg(series: dict[str, list], x_label: str, y_label: str, mark_x: float | None, max_points: int) -> str:
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points if y == y]  # NaN is no point
    x0, x1 = min(xs), max(xs)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> tuple[int, int]:
        return (round(LEFT + (x - x0) / (x1 - x0) * (RIGHT - LEFT)),
                round(BOTTOM - (y - y0) / (y1 - y0) * (BOTTOM - TOP)))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' font-size='10'>"  # no size: 300 x 150
             f"<path d='M{LEFT} {TOP}V{BOTTOM}H{RIGHT}' stroke='#666' fill='none'/>"
             f"<text y='{TOP + 4}'>{y1:.3g}</text><text y='{BOTTOM}'>{y0:.3g}</text>"
             f"<text x='{LEFT}' y='{HEIGHT - 8}'>{x0:g}</text><text x='{RIGHT}' y='{HEIGHT - 8}' text-anchor='end'>"
             f"{x1:g}</text><text x='{(LEFT + RIGHT) // 2}' y='{HEIGHT - 8}' text-anchor='middle'>{x_label}</text>"
             f"<text x='{LEFT + 4}' y='{TOP + 8}'>{y_label}</text><g fill='none' stroke-width='2'>"]
    for points, color in zip(series.values(), COLORS, strict=False):
        kept = [(x, y) for x, y in _thin(points, max_points, mark_x) if y == y]
        line = " ".join(",".join(map(str, at(x, y))) for x, y in kept)
        parts.append(f"<polyline stroke='{color}' points='{line}'/>")
        parts += ["<circle stroke='{}' r='4' cx='{}' cy='{}'/>".format(color, *at(x, y))
                  for x, y in kept if x == mark_x]
    parts.append("</g>")
    parts += [f"<text x='{RIGHT + 6}' y='{TOP + 10 + 13 * i}' fill='{color}'>{_escape(name)}</text>"
              for i, (name, color) in enumerate(zip(series, COLORS, strict=False))]
    return "".join(parts) + "</svg>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown(alt: str, svg: str) -> str:
    """The Markdown entry of an SVG: an image whose source is the SVG itself, base64-encoded."""
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


def heat_map(rows: dict[str, Sequence[float]], n_columns: int, title: str) -> dg.MetadataValue | None:
    """A grid of `rows` (name: a value in [0, 1] per column), darker is higher (0 a pale grey, so that an
    empty cell still shows, 1 black, no value white), the row names at its left and the columns numbered
    above from 0 (the last digit when there are more than 10). The caller says what the columns are and
    the scale (`HEAT_MAP_SCALE`) beside it: the chart has no room for words. None when it does not fit:
    over the limit, wider than the chart, or row names that only a cut shorter than theirs would fit and
    that the cut makes alike."""
    if not rows or n_columns == 0:
        return dg.MetadataValue.text("nothing to plot")
    png = _cells_png(list(rows.values()), n_columns)
    for width in (None, 21, 12):  # the names whole, then cut shorter while the whole is over the limit
        names = [name[:width] for name in rows]
        if len(set(names)) < len(names):
            continue
        svg = _grid(names, png, n_columns)
        if svg and len(markdown := _markdown(title, svg)) < INLINE_LIMIT:
            return dg.MetadataValue.md(markdown)
    return None


def _cells_png(rows: list[Sequence[float]], n_columns: int) -> str:
    """The cells as one greyscale PNG, a pixel each (some 100-150 bytes for the grids that fit), base64."""
    values = np.array([list(v) for v in rows], dtype=float).reshape(len(rows), n_columns)
    grey = np.where(np.isnan(values), 255, np.round(235 * (1 - np.clip(np.nan_to_num(values), 0, 1))))
    png = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), "L").save(png, "PNG", optimize=True)
    return base64.b64encode(png.getvalue()).decode()


def _grid(names: list[str], png: str, n_columns: int) -> str:
    """The cells' PNG drawn large and unsmoothed beside the row names; "" when the columns at their
    narrowest run past the chart's width."""
    left, top, row = 6 * max(map(len, names), default=1) + 4, 14, 14
    cell = max(min((WIDTH - left) // n_columns, 40), 8)
    if left + cell * n_columns > WIDTH:
        return ""
    bottom = top + row * len(names)
    numbers = " ".join(str(left + j * cell + cell // 2 - 3) for j in range(n_columns))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' font-size='10' width='{WIDTH}' height='{bottom + 2}'>",
             f"<image x='{left}' y='{top}' width='{cell * n_columns}' height='{bottom - top}' preserveAspectRatio="
             f"'none' image-rendering='pixelated' href='data:image/png;base64,{png}'/>",
             *(f"<text y='{top + i * row + 11}'>{_escape(name)}</text>" for i, name in enumerate(names)),
             f"<text x='{numbers}' y='11'>{''.join(str(j % 10) for j in range(n_columns))}</text>"]
    return "".join(parts) + "</svg>"
