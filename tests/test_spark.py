"""The Spark path of sessions, text and splits against the polars path, row for row (Spark in local mode)."""

from __future__ import annotations

import os
import shutil
import sys

import dagster as dg
import polars as pl
import pytest
from conftest import materialize_all

from sessionbert_assets.spark import SparkResource
from sessionbert_core.data.access_log import SESSION_GAP_MINUTES, sessions_by_gap
from sessionbert_core.data.combine import ingest_landing
from sessionbert_external import spark_sessions

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime (.ci/run installs "
                                                                      "Debian's openjdk-17-jre-headless)")
DATA = ["landing_folder", "landing_files", "raw_sessions", "quarantined_events", "billing_records", "session_splits"]


def _splits(result, home) -> tuple[pl.DataFrame, dict]:
    assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
    metadata = next(e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                    if e.asset_key.to_user_string() == "session_splits")
    return pl.read_parquet(home / "session_splits.parquet"), {k: v.value for k, v in metadata.items()}


def test_the_spark_path_writes_the_rows_of_the_polars_path(tmp_path):
    home, instance = tmp_path / "home", dg.DagsterInstance.ephemeral()
    by_polars, polars_metadata = _splits(materialize_all(home, "synthetic", selection=DATA, instance=instance), home)
    by_spark, spark_metadata = _splits(materialize_all(home, "synthetic", selection=["session_splits"],
                                                       engine="spark", instance=instance), home)
    assert by_spark.schema == by_polars.schema
    assert by_spark.height == by_polars.height > 1000
    assert by_spark.equals(by_polars)  # every column of every row, in the same order
    assert spark_metadata["engine"].startswith("spark ") and polars_metadata["engine"].startswith("polars ")
    assert spark_metadata["splits"] == polars_metadata["splits"]


def test_spark_cuts_sessions_by_the_gap_as_polars_does(tiny_world):
    """Page views without a session id (an access log's): the same sessions, by the same 30-minute gap."""
    events = ingest_landing(tiny_world.landing, b"k" * 32).events.with_row_index("_line").with_columns(
        pl.col("_line").cast(pl.Int64), session_id=pl.lit(None, pl.String))
    expected = sessions_by_gap(events.with_columns(_ts=pl.col("timestamp"), _gap=pl.lit(True), _file=pl.lit("f"),
                                                   _reason=pl.lit(None, pl.String))).sort("_line")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = spark_sessions.session({"master": "local[1]"})
    try:
        frame = spark.createDataFrame(events.rename({"_line": "_order"}).to_arrow())
        got = pl.from_arrow(spark_sessions.sessions_by_gap(frame, SESSION_GAP_MINUTES).toArrow()).sort("_order")
    finally:
        spark.stop()
    assert got["session_id"].n_unique() == expected["session_id"].n_unique() > 100
    assert got["session_id"].to_list() == expected["session_id"].to_list()


def test_a_missing_java_or_pyspark_is_a_clear_failure(tmp_path, monkeypatch):
    missing = SparkResource(master="local[1]", spark_submit=str(tmp_path / "no-spark-submit"))
    assert "needs PySpark" in missing.problem()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert "needs a Java runtime" in SparkResource(master="local[1]", spark_submit=sys.executable).problem()
