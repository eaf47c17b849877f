"""Inline charts: under the UI's 1,000 characters of Markdown whatever they are given, the marked point kept."""

import base64
import io
import re

import numpy as np
from PIL import Image

from sessionbert_assets.charts import INLINE_LIMIT, heat_map, line_chart


def _svg(entry) -> str:
    return base64.b64decode(entry.md_str.split("base64,")[1].rstrip(")")).decode()


def test_a_chart_fits_in_place_however_long_its_lines():
    series = {f"line {i}": [(x, (x * (i + 1)) % 7 / 7) for x in range(2_000)] for i in range(6)}
    entry = line_chart(series, "step", "loss")
    svg = _svg(entry)
    assert len(entry.md_str) < INLINE_LIMIT and ">line 0<" in svg and ">step<" in svg and ">loss<" in svg
    assert 1 <= svg.count("<polyline") <= 4  # lines dropped from the end once thinned to 6 points


def test_the_marked_point_survives_thinning():
    curve = [(k, 1 / k) for k in range(2, 40)]
    svg = _svg(line_chart({"sessionbert": curve, "tfidf": curve}, "k", "silhouette", mark_x=5))
    assert svg.count("<circle") >= 1
    assert line_chart({}, "k", "silhouette").value == "nothing to plot"


def _pixels(svg: str) -> np.ndarray:
    png = re.search(r"data:image/png;base64,([^']+)'", svg).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))


def test_a_heat_map_fits_in_place_and_its_cells_are_the_values():
    values = {f"persona {p}": [((p + 1) * (c + 3)) % 11 / 10 for c in range(12)] for p in range(6)}
    entry = heat_map(values, 12, "P(persona | cluster)")
    svg = _svg(entry)
    assert len(entry.md_str) < INLINE_LIMIT and ">persona 5<" in svg and ">012345678901<" in svg
    pixels = _pixels(svg)
    assert pixels.shape == (6, 12)  # a pixel a cell, a row a persona
    assert np.array_equal(pixels, np.round(235 * (1 - np.array(list(values.values())))))  # darker is higher
    many = {f"a persona with a long name {p}": [0.5] * 60 for p in range(40)}
    assert heat_map(many, 60, "P(persona | cluster)") is None  # the caller's PNG then


def test_a_heat_map_keeps_its_rows_apart_its_columns_inside_and_no_value_white():
    alike = {"frequent traveller business": [0.2, 0.4], "frequent traveller budget": [0.6, 0.8]}
    svg = _svg(heat_map(alike, 2, "P"))
    assert ">frequent traveller business<" in svg and ">frequent traveller budget<" in svg  # whole: they fit
    long = {f"a persona whose name runs on and on, number {p}": [0.5] * 5 for p in range(12)}
    assert heat_map(long, 5, "P") is None  # cut to fit, every name would read `a persona wh`
    assert heat_map({"one": [0.5] * 40}, 40, "P") is None  # 40 columns of 8 px run past the 300 px chart
    assert _pixels(_svg(heat_map({"one": [float("nan"), 0.0, 1.0]}, 3, "P"))).tolist() == [[255, 235, 0]]
    assert heat_map({}, 0, "P").value == "nothing to plot"
