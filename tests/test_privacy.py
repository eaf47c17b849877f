"""No identifier of a person reaches disk in clear: every input kind goes through one pseudonymization pass
(e-mail addresses in any URL encoding, IPv4/IPv6, ARNs, account ids, identity fields, names in messages,
extra columns, file names); and a row dated outside the accepted window is quarantined, not the run."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import ReadOptions, discover
from sessionbert_core.data.privacy import Pseudonymizer
from sessionbert_core.data.validate import Window

KEY = b"test-key"
HEADER = "user_id,session_id,timestamp,service,page\n"
ACCOUNT = "210987654321"

# (file name, content, the identifiers planted in it)
ACCESS_LOG = "\n".join([
    '203.0.113.7 - alice [02/Mar/2026:10:00:00 +0000] "GET /users/frank@example.net HTTP/1.1" 200 10 '
    '"https://site/?mail=gina%40example.org" "Mozilla/5.0 (proxy 198.51.100.9)"',
    '203.0.113.7 - - [02/Mar/2026:10:01:00 +0000] "GET /users/frank%40example.net/keys?ip=2001:db8::17 HTTP/1.1" '
    '200 10 "-" "Mozilla/5.0"',
    '  192.0.2.44 - - [02/Mar/2026:10:02:00 +0000] "GET /compute HTTP/1.1" 200 10 "-" "Mozilla/5.0"',
    'client.example-corp.internal - - [02/Mar/2026:10:03:00 +0000] "GET /broken HTTP/1.1" 200',
]) + "\n"
EVENTS_CSV = ("user_id,session_id,timestamp,service,page,email,ip\n"
              "hank@example.com,s1,2026-03-02T10:00:00Z,s3,/buckets/hank@example.com,hank.private@example.com,"
              "10.1.2.3\n"
              "u2,s2,2026-03-02T10:00:00Z,s3,/list,irene@example.com,fe80::1ff:fe23:4567:890a\n")
EVENTS_JSONL = json.dumps({"user_id": "u3", "session_id": "s3", "timestamp": "2026-03-02T10:00:00Z",
                           "service": "ec2", "page": "/x", "profile": {"login": "jules", "mail": "jules@example.com"},
                           "username": "kate"}) + "\n"
CLOUDTRAIL = {"Records": [{
    "eventVersion": "1.08", "eventTime": "2026-03-02T10:00:00Z", "eventSource": "iam.amazonaws.com",
    "eventName": "ListUsers", "awsRegion": "us-east-1", "sourceIPAddress": "198.51.100.77",
    "userAgent": "AWS Internal", "sessionCredentialFromConsole": "true", "eventID": "e-1",
    "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/leo",
                     "accountId": ACCOUNT, "sessionContext": {"sourceIdentity": "leo-source",
                                                              "sessionIssuer": {"userName": "AdminRole"}}},
    "errorMessage": "User mallory-user is not authorized to perform iam:ListUsers",
    "recipientAccountId": ACCOUNT}]}
PLANTED = ("frank@example.net", "frank%40example.net", "gina%40example.org", "gina@example.org", "203.0.113.7",
           "198.51.100.9", "2001:db8::17", "192.0.2.44", "client.example-corp.internal", "alice", "hank@example.com",
           "hank.private", "10.1.2.3", "irene@example.com", "fe80::1ff", "jules", "kate", ACCOUNT, "leo-source",
           "AdminRole", "mallory-user", "198.51.100.77", "/leo")


def _every_stored_byte(*roots: Path) -> bytes:
    """Every file under the roots, Parquet contents decoded (Parquet compresses what it holds)."""
    out = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                out.append(path.read_bytes() if path.suffix != ".parquet" else
                           json.dumps(pl.read_parquet(path).to_dicts(), default=str).encode())
            out.append(str(path).encode())
    return b"\n".join(out)


@pytest.fixture
def planted(landing):
    folder = landing({"access.log": ACCESS_LOG, "events.csv": EVENTS_CSV, "more.jsonl": EVENTS_JSONL,
                      "user@example.com-export.csv": HEADER + "u9,s9,2026-03-02T10:00:00Z,s3,/a\n"})
    trail = folder / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1"
    trail.mkdir(parents=True)
    (trail / f"{ACCOUNT}_CloudTrail_us-east-1_20260302T1000Z_abc.json.gz").write_bytes(
        gzip.compress(json.dumps(CLOUDTRAIL).encode()))
    pl.DataFrame({"user_id": ["u4"], "session_id": ["s4"], "timestamp": ["2026-03-02T10:00:00Z"],
                  "service": ["s3"], "page": ["/p"], "contact": [{"email": "nina@example.com", "ip": "10.9.8.7"}]}
                 ).write_parquet(folder / "table.parquet")
    return folder


def test_no_planted_identifier_is_stored_anywhere(planted, tmp_path):
    home = tmp_path / "home"
    result = ingest_landing(planted, KEY, cache=home / "ingest_cache")
    stored = _every_stored_byte(home)
    stored += json.dumps([frame.to_dicts() for frame in (result.events, result.quarantine, result.files,
                                                         result.filtered)], default=str).encode()
    stored += json.dumps(result.ignored).encode()
    for identifier in (*PLANTED, "nina@example.com", "10.9.8.7"):
        assert identifier.encode() not in stored, identifier
    assert result.events.height >= 7  # the page views themselves are all kept


def test_an_identifier_gets_the_same_pseudonym_in_every_form(planted):
    result = ingest_landing(planted, KEY)
    pages = set(result.events["page"])
    frank = Pseudonymizer(KEY).of("frank@example.net")
    assert f"/users/{frank}" in pages and f"/users/{frank}/keys" in pages  # @ and %40 name the same person
    assert Pseudonymizer(KEY).of("hank@example.com") in set(result.events["user_id"])


def test_file_names_are_pseudonymized_where_they_hold_an_account_or_address(planted):
    names = [f.name for f in discover(planted, KEY)]
    assert not any(ACCOUNT in name or "user@example.com" in name for name in names)
    hidden = Pseudonymizer(KEY).of(ACCOUNT)
    assert f"AWSLogs/{hidden}/CloudTrail/us-east-1/{hidden}_CloudTrail_us-east-1_20260302T1000Z_abc.json.gz" in names


def test_a_pseudonym_depends_on_the_key():
    assert Pseudonymizer(b"one").of("x@example.com") != Pseudonymizer(b"two").of("x@example.com")
    assert Pseudonymizer(b"one").text("std::vector at 10:30:00, Chrome/96.0.4664.45") == \
        "std::vector at 10:30:00, Chrome/96.0.4664.45"  # no identifier, nothing replaced


# ----------------------------------------------------------------------------------------------
# the accepted window of times


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_future_dated_row_is_quarantined_and_the_rest_ingested(landing):
    soon = datetime.now(UTC) + timedelta(days=40)
    folder = landing({"events.csv": HEADER + "u1,s1,2026-03-02T10:00:00Z,s3,/a\n"
                      f"u2,s2,{_at(soon)},s3,/b\nu3,s3,2099-01-01T00:00:00Z,s3,/c\n",
                      "billing.csv": "user_id,date,service,cost\nu1,2026-03-01,s3,1.0\nu1,2099-01-01,s3,2.0\n"})
    result = ingest_landing(folder, KEY)
    assert result.events["user_id"].to_list() == ["u1"]
    rows = result.quarantine.select("source_file", "line", "reason").rows()
    assert ("events.csv", 3, "timestamp in the future") in rows and ("events.csv", 4, "timestamp in the future") in rows
    assert ("billing.csv", 3, "date in the future") in rows
    assert result.billing.height == 1


def test_a_row_before_the_first_day_is_quarantined(landing):
    folder = landing({"events.csv": HEADER + "u1,s1,2026-03-02T10:00:00Z,s3,/a\nu2,s2,2025-12-31T23:00:00Z,s3,/b\n"})
    result = ingest_landing(folder, KEY, options=ReadOptions(first_day="2026-01-01"))
    assert result.events["user_id"].to_list() == ["u1"]
    row = result.quarantine.row(0, named=True)
    assert (row["line"], row["reason"]) == (3, "timestamp before the first day")
    assert "SESSIONBERT_FIRST_DAY=2026-01-01" in row["detail"]


def test_the_clock_skew_allowance_stops_at_the_last_day_partition():
    late = datetime(2026, 3, 2, 23, 55, tzinfo=UTC)
    assert Window.at_read(now=late).last.date() == late.date()  # tomorrow's partition does not exist yet
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert Window.at_read(now=noon).last == noon + timedelta(minutes=10)
