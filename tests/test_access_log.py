"""Web access logs: the real Apache log end to end, pseudonymized hosts, 30-minute sessions, filters counted."""

from __future__ import annotations

import gzip

import polars as pl
import pytest
from conftest import APACHE_LOGS

from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.exports.formats import UNKNOWN

KEY = b"test-key"
AGENT = '"-" "Mozilla/5.0 (X11; Linux x86_64)"'


def _line(host: str, time: str, path: str, status: int = 200, agent: str = AGENT, method: str = "GET") -> str:
    return f'{host} - - [{time} +0000] "{method} {path} HTTP/1.1" {status} 512 {agent}'


@pytest.mark.skipif(not APACHE_LOGS.exists(), reason="shared/data/apache_logs is not beside the project")
def test_real_apache_log_goes_through_end_to_end():
    result = ingest_landing(APACHE_LOGS, KEY)
    row = result.files.filter(pl.col("kind") == "access_log").row(0, named=True)
    assert row["read"] == 10_000
    assert row["read"] == row["kept"] + row["quarantined"] + row["filtered"]
    assert row["kept"] > 1_000
    assert {"static file", "crawler"} <= set(result.filtered["reason"])
    assert result.events["user_id"].n_unique() > 500
    assert not result.events["user_id"].str.contains(r"^\d+\.\d+\.\d+\.\d+$").any()
    assert not result.events["page"].str.contains(r"\.(png|css|js)$").any()
    assert result.ignored == (f"PROVENANCE.md ({UNKNOWN})",)


def test_hosts_are_pseudonymized_with_the_key(landing):
    log = _line("10.1.2.3", "17/May/2015:10:05:03", "/blog/post")
    with_a = ingest_landing(landing({"access.log": log}), b"key-a").events["user_id"][0]
    with_b = ingest_landing(landing({"access.log": log}), b"key-b").events["user_id"][0]
    assert "10.1.2.3" not in with_a and with_a != with_b


def test_sessions_split_after_thirty_idle_minutes(landing):
    lines = [
        _line("1.1.1.1", "17/May/2015:10:00:00", "/a"),
        _line("1.1.1.1", "17/May/2015:10:29:00", "/b"),
        _line("1.1.1.1", "17/May/2015:11:00:00", "/c"),  # 31 minutes after /b
        _line("2.2.2.2", "17/May/2015:10:10:00", "/a"),
    ]
    events = ingest_landing(landing({"access.log": "\n".join(lines)}), KEY).events
    sessions = events.group_by("user_id", "session_id").agg(pl.col("page")).sort("session_id")
    pages = sorted(sessions["page"].to_list())
    assert pages == [["/a"], ["/a", "/b"], ["/c"]]


def test_filters_are_counted_by_reason_and_pages_normalized(landing):
    lines = [
        _line("1.1.1.1", "17/May/2015:10:00:00", "/docs/guide/?utm=x"),
        _line("1.1.1.1", "17/May/2015:10:00:01", "/style.css"),
        _line("1.1.1.1", "17/May/2015:10:00:02", "/missing", status=404),
        _line("1.1.1.1", "17/May/2015:10:00:03", "/form", method="POST"),
        _line("3.3.3.3", "17/May/2015:10:00:04", "/docs", agent='"-" "Googlebot/2.1"'),
        _line("1.1.1.1", "17/May/2015:10:00:05", "/orders/12345/items"),
        "this is not a log line",
    ]
    path = landing({})
    with gzip.open(path / "access.log.gz", "wt") as handle:
        handle.write("\n".join(lines))
    result = ingest_landing(path, KEY)
    assert dict(result.filtered.select("reason", "rows").iter_rows()) == {
        "static file": 1, "status 4xx": 1, "not a GET request": 1, "crawler": 1}
    assert result.events["page"].to_list() == ["/docs/guide", "/orders/:id/items"]
    assert result.events["service"].to_list() == ["docs", "orders"]
    assert result.quarantine["reason"].to_list() == ["not a Common or Combined Log Format line"]
    assert result.files["read"].item() == 7
