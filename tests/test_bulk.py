"""The bucketed (paper-scale) ingestion and serialization give what the in-memory path gives."""

from __future__ import annotations

import polars as pl

from sessionbert_core.data.bulk import ingest_to_buckets, serialize_buckets
from sessionbert_core.data.ingest import ingest_landing
from sessionbert_core.data.serialize import serialize_sessions, split_sessions

KEY = b"test-key"


def test_buckets_give_the_same_sessions_splits_and_quarantine(tiny_world, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    for path in tiny_world.landing.iterdir():
        (landing / path.name).write_bytes(path.read_bytes())
    # a bad row and a duplicate, to see both quarantined the same way
    (landing / "extra.csv").write_text(
        "user_id,session_id,timestamp,service,page\n"
        "u-extra,s1,2026-01-05T10:00:00Z,logs,log_groups\n"
        "u-extra,s1,2026-01-05T10:00:00Z,logs,log_groups\n"
        "u-extra,s1,not-a-time,logs,log_groups\n")
    whole = ingest_landing(landing, KEY)
    expected = split_sessions(serialize_sessions(whole.events, whole.billing)).sort("user_id", "session_id")

    counts = ingest_to_buckets(landing, tmp_path / "out", KEY, buckets=7, report=lambda _: None)
    serialized = serialize_buckets(tmp_path / "out", report=lambda _: None)
    got = pl.read_parquet(tmp_path / "out" / "sessions" / "*.parquet").sort("user_id", "session_id")

    assert got.equals(expected)
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine" / "*.parquet")
    assert sorted(quarantine["reason"].to_list()) == sorted(whole.quarantine["reason"].to_list())
    assert counts["rows_read"] == (serialized["events"] + counts["billing_rows_valid"] + quarantine.height
                                   + counts["rows_filtered"])
    assert serialized["sessions"] == expected.height and serialized["users"] == expected["user_id"].n_unique()
