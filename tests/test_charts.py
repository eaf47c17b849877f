"""Inline charts: under the UI's 1,000 characters of Markdown whatever they are given, the marked point kept."""

import base64

from sessionbert_assets.charts import INLINE_LIMIT, line_chart


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
