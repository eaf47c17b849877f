"""Ingestion: bad rows quarantined with counts conserved, unreadable files named, the landing folder untouched."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import IngestError, discover
from sessionbert_core.data.landing_watch import probe

KEY = b"test-key"
HEADER = "user_id,session_id,timestamp,service,page,country,city,billing_tier\n"
GOOD = [
    "u1,s1,2026-03-02T10:00:00Z,compute,instances,Germany,Berlin,High",
    "u1,s1,2026-03-02T10:01:00+01:00,compute,launch_instance,Germany,Berlin,high",
    "u1,s1,1772445720,metrics,alarms,Germany,Berlin,Very High",
    "u2,s9,2026-03-02 11:00:00,iam,users,,,",
]
BAD = {
    "missing user_id": ",s1,2026-03-02T10:00:00Z,compute,home,,,",
    "missing page": 'u1,s1,2026-03-02T10:00:00Z,compute,"",,,',
    "unparseable timestamp": "u1,s1,yesterday at noon,compute,home,,,",
    "control character in page": "u1,s1,2026-03-02T10:00:05Z,compute,ho\x07me,,,",
    "page longer than 512 characters": "u1,s1,2026-03-02T10:00:06Z,compute," + "x" * 1_000_000 + ",,,",
    "unknown billing tier": "u1,s1,2026-03-02T10:00:07Z,compute,home,,,Platinum",
    "duplicate event": "u1,s1,2026-03-02T10:00:00Z,compute,instances,Germany,Berlin,High",
    "timestamp outside 1990-2100": "u1,s1,1850-01-01T00:00:00Z,compute,home,,,",
}


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bad_rows_are_quarantined_and_counts_conserved(landing):
    truncated = "u3,s3,2026-03-02T12:00:00Z,comp"  # the writer died mid-line
    content = HEADER + "\n".join(GOOD + list(BAD.values()) + [truncated])
    folder = landing({"events.csv": content})
    before = _digest(folder)
    result = ingest_landing(folder, KEY)

    assert result.events.height == len(GOOD)
    reasons = result.quarantine["reason"].to_list()
    for reason in BAD:
        assert reason in reasons, reason
    assert "missing page" in reasons  # the truncated line has no page
    assert result.quarantine.height == len(BAD) + 1
    row = result.files.row(0, named=True)
    assert row["read"] == row["kept"] + row["quarantined"] + row["filtered"] == len(GOOD) + len(BAD) + 1
    # the 1 MB row is kept whole in the quarantine, and nothing in the landing folder changed
    assert result.quarantine["raw"].str.len_chars().max() > 1_000_000
    assert _digest(folder) == before


def test_quarantine_rows_point_at_file_and_line(landing):
    folder = landing({"events.csv": HEADER + GOOD[0] + "\n" + BAD["unparseable timestamp"] + "\n"})
    row = ingest_landing(folder, KEY).quarantine.row(0, named=True)
    assert (row["source_file"], row["line"], row["reason"]) == ("events.csv", 3, "unparseable timestamp")
    assert json.loads(row["raw"])["timestamp"] == "yesterday at noon"


def test_quarantine_keeps_columns_outside_the_contract(landing):
    folder = landing({"events.csv": "user_id,session_id,timestamp,service,page,referrer\n"
                                    "u1,s1,not a time,compute,home,https://example.org/x\n"})
    raw = json.loads(ingest_landing(folder, KEY).quarantine["raw"].item())
    assert raw == {"user_id": "u1", "session_id": "s1", "timestamp": "not a time", "service": "compute",
                   "page": "home", "referrer": "https://example.org/x"}


def test_timestamps_and_tiers_are_normalized(landing):
    folder = landing({"events.csv": HEADER + "\n".join(GOOD) + "\n"})
    events = ingest_landing(folder, KEY).events
    assert events["timestamp"].dtype == pl.Datetime("us", "UTC")
    session = events.filter(pl.col("user_id") == "u1")
    assert session["timestamp"].dt.strftime("%H:%M").to_list() == ["09:01", "10:00", "10:02"]
    assert set(session["billing_tier"]) == {"High", "Very High"}
    assert events.filter(pl.col("user_id") == "u2")["country"].to_list() == [None]


def test_a_row_with_too_many_fields_is_quarantined(landing):
    folder = landing({"events.csv": HEADER + GOOD[0] + "\n" + GOOD[1] + ",surplus\n"})
    result = ingest_landing(folder, KEY)
    assert result.events.height == 1
    assert result.quarantine.select("line", "reason").row(0) == (3, "wrong number of fields")


def test_jsonl_with_a_truncated_last_line(landing):
    good = {"user_id": "u1", "session_id": "s1", "timestamp": 1772445600, "service": "dns", "page": "records"}
    lines = [json.dumps(good), "[1, 2]", "", json.dumps(good | {"page": "zones"})[:-9]]
    result = ingest_landing(landing({"events.jsonl": "\n".join(lines)}), KEY)
    assert result.events.height == 1
    assert result.quarantine["reason"].to_list() == ["JSON value is not an object", "invalid JSON"]
    assert result.quarantine["line"].to_list() == [2, 4]
    assert result.filtered.rows() == [("events.jsonl", "blank line", 1)]  # counted, not quarantined


def test_parquet_with_typed_timestamps(landing, tmp_path):
    folder = landing({})
    pl.DataFrame({
        "user_id": ["u1", "u1"], "session_id": ["s1", "s1"],
        "timestamp": pl.Series(["2026-03-02 10:00:00", "2026-03-02 10:05:00"]).str.to_datetime(),
        "service": ["vpc", "vpc"], "page": ["subnets", "vpcs"],
    }).write_parquet(folder / "events.parquet")
    events = ingest_landing(folder, KEY).events
    assert events["timestamp"].dt.hour().to_list() == [10, 10]
    assert events["timestamp"].dtype.time_zone == "UTC"


def test_duplicates_across_files_are_quarantined(landing):
    folder = landing({"a.csv": HEADER + GOOD[0] + "\n", "b.csv": HEADER + GOOD[0] + "\n"})
    result = ingest_landing(folder, KEY)
    assert result.events.height == 1
    assert result.quarantine.select("source_file", "reason", "detail").row(0) == (
        "b.csv", "duplicate event", "first at a.csv:2")


def test_billing_rows_are_validated(landing):
    billing = "user_id,date,service,cost\nu1,2026-03-01,compute,12.5\nu1,2026-03-01,compute,abc\nu1,someday,x,1\n"
    result = ingest_landing(landing({"events.csv": HEADER + GOOD[0] + "\n", "billing.csv": billing}), KEY)
    assert result.billing.height == 1
    assert sorted(result.quarantine["reason"]) == ["cost is not a number", "unparseable date"]
    assert set(result.quarantine["kind"]) == {"billing"}


def test_unreadable_file_fails_with_its_name(landing):
    folder = landing({"good.csv": HEADER + GOOD[0] + "\n", "broken.parquet": b"PAR1 this is not parquet"})
    with pytest.raises(IngestError, match=r"broken\.parquet: cannot be read as PARQUET"):
        ingest_landing(folder, KEY)


def test_missing_required_column_fails_with_its_name(landing):
    folder = landing({"events.csv": "user_id,timestamp,service,page\nu1,2026-03-02T10:00:00Z,a,b\n"})
    with pytest.raises(IngestError, match=r"events\.csv: missing required column\(s\) session_id"):
        ingest_landing(folder, KEY)


def test_a_folder_without_event_files_is_an_error(landing):
    with pytest.raises(IngestError, match="no event files"):
        ingest_landing(landing({"notes.txt": "hello"}), KEY)


def test_an_unreadable_file_can_be_quarantined_instead_of_failing_the_run(landing):
    folder = landing({"good.csv": HEADER + GOOD[0] + "\n", "broken.parquet": b"PAR1 this is not parquet"})
    result = ingest_landing(folder, KEY, unreadable="quarantine")
    assert result.events.height == 1
    row = result.quarantine.filter(pl.col("kind") == "file").row(0, named=True)
    assert row["source_file"] == "broken.parquet" and row["reason"] == "unreadable file"
    assert "cannot be read as PARQUET" in row["detail"]
    assert result.files.filter(pl.col("file") == "broken.parquet")["parsed"].item() == "refused"


def test_cached_ingest_parses_only_new_files_and_gives_the_same_result(landing, tmp_path):
    folder = landing({"a.csv": HEADER + "\n".join(GOOD[:2]) + "\n", "b.csv": HEADER + BAD["duplicate event"] + "\n"})
    cache = tmp_path / "cache"
    first = ingest_landing(folder, KEY, cache=cache)
    assert set(first.files["parsed"]) == {"parsed"}
    (folder / "c.csv").write_text(HEADER + "\n".join(GOOD[2:]) + "\n")
    second = ingest_landing(folder, KEY, cache=cache)
    parsed = dict(zip(second.files["file"], second.files["parsed"], strict=True))
    assert parsed == {"a.csv": "from cache", "b.csv": "from cache", "c.csv": "parsed"}
    plain = ingest_landing(folder, KEY)
    assert second.events.equals(plain.events) and second.quarantine.equals(plain.quarantine)
    assert second.quarantine["reason"].to_list() == ["duplicate event"]  # found across a cached and a new file
    (folder / "a.csv").write_text(HEADER + GOOD[0] + "\n")  # changed content is parsed again, the old entry dropped
    third = ingest_landing(folder, KEY, cache=cache)
    assert dict(zip(third.files["file"], third.files["parsed"], strict=True))["a.csv"] == "parsed"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 3


def test_probe_reads_headers_only_and_names_the_problem(landing):
    folder = landing({"good.csv": HEADER + GOOD[0] + "\n", "broken.parquet": b"PAR1 this is not parquet",
                      "short.csv": "user_id,timestamp\nu1,2026-03-02T10:00:00Z\n"})
    assert probe(_found(folder, "good.csv")) is None
    assert "cannot be read as PARQUET" in probe(_found(folder, "broken.parquet"))
    assert "missing required column(s) session_id, service, page" in probe(_found(folder, "short.csv"))


def _found(folder, name: str):
    """The landing folder's file of that name, as discovery classifies it."""
    return next(f for f in discover(folder, KEY) if f.name == name)
