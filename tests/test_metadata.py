"""The line each evaluation asset opens with, on crafted figures (the assets' inputs, not results): the
served method first, then the best baseline and the ceiling or oracle, three decimals."""

from __future__ import annotations

import dagster as dg

from sessionbert_assets import headlines


def _head(**accuracy: float) -> dict:
    return {m: {"accuracy": a, "f1_weighted": a} for m, a in accuracy.items()}


def test_the_model_headline_names_what_serves_the_best_baseline_and_the_ceiling():
    evaluation = {"service": _head(sessionbert=0.6861, popularity=0.2, markov=0.5552, ceiling=0.7163),
                  "page": _head(sessionbert=0.4, popularity=0.1, markov=0.45, sessionbert_markov=0.47, ceiling=0.6),
                  "served": {"service": "sessionbert", "page": "sessionbert_markov"}}
    assert headlines.next_activity(evaluation).splitlines() == [
        "service: sessionbert 0.686 serves, ceiling 0.716", "  best baseline markov 0.555",
        "page: sessionbert_markov 0.470 serves, ceiling 0.600", "  best baseline markov 0.450", "(test accuracy)"]


def test_the_baselines_headline_names_every_baseline_and_no_ceiling_without_truth():
    evaluation = {"service": _head(popularity=0.2, markov=0.5), "page": _head(popularity=0.1, markov=0.3)}
    assert headlines.next_activity(evaluation).splitlines() == [
        "service: popularity 0.200, markov 0.500", "page: popularity 0.100, markov 0.300", "(test accuracy)"]


def test_the_hit_at_k_headline_says_when_a_baseline_beats_what_serves():
    def at(**hit5: float) -> dict:
        return {"n_users": 1234, **{m: {"hit@5": v, "hit@3": v} for m, v in hit5.items()}}

    evaluation = {"served_ranker": "sessionbert", "seen_days": {
        "6": at(sessionbert=0.598, popularity=0.714, markov=0.5, sessionbert_persona=0.884, oracle=0.931),
        "10": at(sessionbert=0.9, popularity=0.7, oracle=0.95)}}
    assert headlines.hit_at_k(evaluation).splitlines() == [
        "D=6, 1,234 users: sessionbert 0.598 serves, oracle 0.931",
        "  best baseline popularity 0.714", "  best sessionbert_persona 0.884",
        "D=10, 1,234 users: sessionbert 0.900 serves, oracle 0.950", "  best baseline popularity 0.700", "(Hit@5)"]


def test_the_persona_headline_compares_the_served_space_with_the_best_other():
    evaluation = {"k": 5, "representation": "sessionbert", "ari": 0.8921, "accuracy": 0.984,
                  "by_representation": {"sessionbert": {"ari": 0.89}, "tfidf": {"ari": 0.869}, "both": {"ari": 0.8}}}
    assert headlines.personas(evaluation) == ("k = 5 in the sessionbert space; ARI 0.892, accuracy 0.984 "
                                              "(best other: tfidf ARI 0.869)")
    assert headlines.personas({"k": 3, "representation": "tfidf"}) == "k = 3 in the tfidf space"


def _materialized(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return dict(materialization.metadata)
    raise KeyError(asset)


def test_every_table_asset_describes_the_columns_it_writes(trained):
    import polars as pl

    from sessionbert_assets.definitions import defs
    from sessionbert_assets.schemas import COLUMNS

    home, _ = trained
    graph = defs.resolve_asset_graph()
    for asset, described in COLUMNS.items():
        written = list(pl.read_parquet_schema(home / f"{asset}.parquet"))
        named = [c for c in described if c != "*"]
        assert [c for c in written if c in named] == named, asset  # every described column, in order
        assert "*" in described or written == named, (asset, written)  # nothing undescribed
        node = graph.get(dg.AssetKey(asset))
        schema = node.metadata["dagster/column_schema"]
        schema = getattr(schema, "schema", schema)  # a TableSchema, or its metadata value
        assert all(column.description for column in schema.columns) and node.owners and node.code_version


def test_evaluation_assets_open_with_their_headline(trained):
    _, result = trained
    for asset in ("model_evaluation", "next_activity_baselines", "hit_at_k_evaluation", "persona_evaluation",
                  "cluster_sweep"):
        metadata = _materialized(result, asset)
        assert next(iter(metadata)) == "headline", asset
    hit = _materialized(result, "hit_at_k_evaluation")
    assert {"D6", "D10", "D12"} <= set(hit) and "table" not in hit  # one table per D, each a screen wide
    columns = [c.name for c in hit["D10"].schema.columns]
    assert columns[:2] == ["method", "hit@5"]
    assert [r.data["method"] for r in hit["D10"].records if r.data["method"].endswith(" ◀")] == [
        hit["served_ranker"].value + " ◀"]  # what serves marked
    assert not [k for k in hit if k.count("/") == 2 and "/served/" not in k]  # no single entry per method
    sweep = _materialized(result, "cluster_sweep")
    chosen = [r.data["k"] for r in sweep["silhouette"].records if r.data["k"].endswith(" ◀")]
    assert chosen == [f"{sweep['k'].value} ◀"]


def test_the_model_check_shows_what_it_compared(trained):
    _, result = trained
    [evaluation] = [e for e in result.get_asset_check_evaluations()
                    if e.check_name == "check_model_beats_popularity_and_champion"]
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    assert "against popularity" in metadata["compared"]
    assert {"service/accuracy", "service/popularity", "service/needed", "page/allowed_drop"} <= set(metadata)


def test_an_mlflow_run_links_to_its_artifacts_on_a_local_store(trained):
    import re
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    _, result = trained
    metadata = _materialized(result, "hit_at_k_evaluation")
    entry = metadata["mlflow_run"]
    name, target = re.fullmatch(r"\[(run \w{8})\]\((file:[^)]+)\) \(its artifacts\)", entry.md_str).groups()
    assert Path(unquote(urlparse(target).path)).is_dir() and name == f"run {metadata['mlflow_run_id'].value[:8]}"


def _svg(entry: dg.MetadataValue) -> str:
    """The SVG of an inline chart, which the UI shows in place only under 1,000 characters of Markdown."""
    import base64

    assert len(entry.md_str) < 1000 and "](data:image/svg+xml;base64," in entry.md_str, entry.md_str[:80]
    return base64.b64decode(entry.md_str.split("base64,")[1].rstrip(")")).decode()


def test_the_assets_plot_in_place(trained):
    _, result = trained
    for asset in ("pretrained_model", "finetuned_model"):
        svg = _svg(_materialized(result, asset)["loss_by_step"])
        assert svg.count("<polyline") == 2 and ">training<" in svg and ">validation<" in svg, asset
    accuracy = _svg(_materialized(result, "finetuned_model")["validation_accuracy_by_step"])
    assert ">service<" in accuracy and ">page<" in accuracy
    sweep = _materialized(result, "cluster_sweep")
    silhouette = _svg(sweep["silhouette_plot"])
    assert silhouette.count("<polyline") >= 1 and "<circle" in silhouette  # the chosen space first, its k circled
    hit = _materialized(result, "hit_at_k_evaluation")
    assert f">{hit['served_ranker'].value}<" in _svg(hit["hit_at_k_plot"])


def test_the_run_summary_prints_numbers_for_people():
    """Counts with separators and no decimals, rates to 4 significant digits, large figures to one decimal."""
    from sessionbert_assets.cli import _value

    shown = [_value(dg.MetadataValue.float(v)) for v in (3.0, 34.87, 1883.7, 0.91183, 0.0, -1883.7, float("nan"))]
    assert shown == ["3", "34.87", "1,883.7", "0.9118", "0", "-1,883.7", "nan"]
    assert [_value(v) for v in (dg.MetadataValue.int(468150), 1609, True, "wordpiece")] == [
        "468,150", "1,609", "True", "wordpiece"]
