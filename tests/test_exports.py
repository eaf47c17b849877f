"""Event pipelines' exports read without code: CloudTrail, Snowplow, Segment, RudderStack, GA4 and a table
mapped in landing.yaml, recognized by content, every record kept, quarantined or filtered, no raw identifier.

The fixtures (tests/fixtures/exports/) are written for these tests in each vendor's published schema, with
bad records planted: a repeated id, a missing and an unparseable time, a record that is not an object, a
truncated last line, a short CSV record, heartbeats and non-page events."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import polars as pl
import pytest

from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import IngestError, ReadOptions, discover
from sessionbert_core.world.exports import FORMATS, render

EXPORTS = Path(__file__).resolve().parent / "fixtures" / "exports"
KEY = b"test-pseudonym-key"
# the fixtures under names that say nothing of their format (the CloudTrail file gzipped, as AWS writes it)
NEUTRAL = {"export-1.json": "drop/part-0001.gz", "export-2.csv": "drop/part-0002", "export-3.json": "drop/part-0003",
           "export-4.json": "part-0004.txt", "export-5.json": "part-0005", "export-6.csv": "part-0006"}
KINDS = {"drop/part-0001.gz": "cloudtrail", "drop/part-0002": "snowplow", "drop/part-0003": "segment",
         "part-0004.txt": "segment", "part-0005": "ga4", "part-0006": "mapped"}
# every raw identifier planted in the fixtures: user names, ARNs, account, e-mails, IPs, cookies, user ids
PLANTED = ("alice", "bob", "arn:aws", "123456789012", "AIDAEXAMPLE", "ASIAEXAMPLEKEY", "carol@example.com",
           "5d2b7f9e-carol-cookie", "9f4e2d1c-dave-cookie", "7a3c-network-carol", "198.51.100", "203.0.113",
           "user-erin", "erin@example.com", "3f9c2b8e-erin-anon", "b7e1a9d4-frank-anon", "192.0.2.",
           "user-grace", "grace@example.com", "c4d5e6f7-grace-anon", "1197617112.1772445600", "henry@example.com",
           "ivan-77", "ivan@example.com", "someone@example.com")


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    for source, name in NEUTRAL.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (EXPORTS / source).read_bytes()
        target.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    (folder / "landing.yaml").write_text((EXPORTS / "landing.yaml").read_text().replace("export-6.csv", "part-0006"))
    return folder


def _quarantined(result, name: str) -> list[tuple[int, str]]:
    rows = result.quarantine.filter(pl.col("source_file") == name).sort("line")
    return list(zip(rows["line"], rows["reason"], strict=True))


def _filtered(result, name: str) -> dict[str, int]:
    rows = result.filtered.filter(pl.col("source_file") == name)
    return dict(zip(rows["reason"], rows["rows"], strict=True))


def test_each_export_is_recognized_by_its_content(exports):
    found = {f.name: f.kind for f in discover(exports, KEY)}
    assert found == KINDS | {"landing.yaml": "mapping"}


def test_every_record_is_kept_quarantined_or_filtered(exports):
    result = ingest_landing(exports, KEY)
    counts = {row["file"]: (row["read"], row["kept"], row["quarantined"], row["filtered"])
              for row in result.files.iter_rows(named=True)}
    assert counts == {"drop/part-0001.gz": (11, 5, 4, 2), "drop/part-0002": (10, 4, 3, 3),
                      "drop/part-0003": (8, 3, 3, 2), "part-0004.txt": (4, 4, 0, 0), "part-0005": (8, 3, 2, 3),
                      "part-0006": (5, 2, 3, 0)}
    assert _quarantined(result, "drop/part-0001.gz") == [
        (6, "duplicate event id"), (7, "missing timestamp"), (8, "unparseable timestamp"),
        (11, "JSON value is not an object")]
    assert _quarantined(result, "drop/part-0002") == [
        (7, "duplicate event id"), (8, "missing timestamp"), (11, "wrong number of fields")]
    assert _quarantined(result, "drop/part-0003") == [
        (5, "duplicate event id"), (6, "missing timestamp"), (8, "invalid JSON")]  # 8: the truncated last line
    assert _quarantined(result, "part-0005") == [(6, "missing timestamp"), (7, "JSON value is not an object")]
    assert _quarantined(result, "part-0006") == [(4, "unparseable timestamp"), (5, "missing user_id"),
                                                 (6, "wrong number of fields")]
    assert _filtered(result, "drop/part-0001.gz") == {"programmatic call": 1, "AWS service event": 1}
    assert _filtered(result, "drop/part-0002") == {"page_ping heartbeat": 2, "link_click event (not a page view)": 1}
    assert _filtered(result, "drop/part-0003") == {"track call (not a page view)": 1,
                                                   "identify call (not a page view)": 1}
    assert _filtered(result, "part-0005") == {"session_start event (not a page view)": 1,
                                              "user_engagement event (not a page view)": 1,
                                              "scroll event (not a page view)": 1}
    assert result.events["user_id"].n_unique() == 9  # alice, bob, carol, dave, erin, frank, grace, henry, ivan


def test_services_pages_places_and_sessions_come_out_as_described(exports):
    events = ingest_landing(exports, KEY).events

    rows = set(events.select("service", "page", "country", "city").rows())
    assert {("s3", "ListBuckets", "us-east-1", None), ("ec2", "DescribeInstances", "eu-west-1", None),
            ("iam", "ListUsers", "us-east-1", None)} <= rows  # CloudTrail: eventSource's label, eventName, region
    assert ("ec2", "/ec2/instances/:id", "DE", "Berlin") in rows  # Snowplow: page_urlpath, ids folded
    assert ("iam", "/iam/roles/:id", "Canada", "Toronto") in rows  # Segment: context.page.path of an anonymous user
    assert ("home", "/", "FR", "Paris") in rows
    assert ("iam", "/iam/users", "Germany", None) in rows  # GA4: the path of page_location; (not set) is none
    assert ("rds", "/rds/databases/:id", "PL", None) in rows  # the mapped table's URL
    sessions = events.group_by("user_id", "session_id").agg(pl.col("service")).sort("user_id")
    by_services = {tuple(s) for s in sessions["service"]}
    assert ("iam",) in by_services and ("lambda",) in by_services  # bob: 60 idle minutes cut CloudTrail's session
    assert ("lambda", "lambda", "cloudwatch") in by_services  # RudderStack's sessionId holds over 49 minutes


def test_no_raw_identifier_is_left_in_any_artifact(exports, tmp_path):
    cache = tmp_path / "cache"
    result = ingest_landing(exports, KEY, cache=cache)
    texts = [frame.write_csv() for frame in (result.events, result.quarantine, result.filtered, result.files)]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in cache.rglob("*") if p.is_file()]
    texts += [pl.read_parquet(p).write_csv() for p in cache.rglob("*.parquet")]
    left = sorted({word for word in PLANTED for text in texts if word in text})
    assert not left, left
    raw = result.quarantine.filter(pl.col("source_file") == "drop/part-0003")["raw"].to_list()
    assert raw[0].startswith('{"anonymousId": "h') and '"messageId": "ajs-m1"' in raw[0]  # only identifiers changed


def test_the_landing_folder_is_not_modified(exports, tmp_path):
    def digest() -> str:
        return hashlib.sha256(b"".join(p.read_bytes() + str(p).encode() for p in sorted(exports.rglob("*"))
                                       if p.is_file())).hexdigest()

    before = digest()
    ingest_landing(exports, KEY, cache=tmp_path / "cache")
    assert digest() == before


def test_a_cloudtrail_file_cut_short_keeps_its_whole_records(landing):
    text = (EXPORTS / "export-1.json").read_text()
    cut = text[: text.index('"eventID": "0c7a5f3e-0000-4000-8000-000000000003"')]
    result = ingest_landing(landing({"AWSLogs-0001.json.gz": gzip.compress(cut.encode())}), KEY)
    assert result.events["page"].to_list() == ["ListBuckets", "GetBucketPolicy"]
    assert _quarantined(result, "AWSLogs-0001.json.gz") == [(3, "truncated record")]


@pytest.mark.parametrize(("callers", "pages"), [
    ("console", {"ListBuckets", "GetBucketPolicy", "DescribeInstances", "ListUsers", "ListFunctions20150331"}),
    ("programmatic", {"PutObject"}),
    ("all", {"ListBuckets", "GetBucketPolicy", "DescribeInstances", "PutObject", "ListUsers",
             "ListFunctions20150331"})])
def test_cloudtrail_callers_are_chosen(landing, callers, pages):
    folder = landing({"trail": (EXPORTS / "export-1.json").read_bytes()})
    result = ingest_landing(folder, KEY, options=ReadOptions(callers))
    assert set(result.events["page"]) == pages


@pytest.mark.parametrize(("mapping", "message"), [
    ("tables:\n  - files: t.csv\n    user: visitor\n    url: href\n", r"table 1 \(t.csv\) maps no `time` column"),
    ("tables:\n  - files: t.csv\n    user: visitor\n    time: ts\n", r"maps neither `page` nor `url`"),
    ("tables:\n  - files: t.csv\n    user: visitor\n    time: ts\n    url: href\n    colour: red\n",
     r"unknown key\(s\) colour"),
    ("tables:\n  - files: t.csv\n    user: who\n    time: ts\n    url: href\n",
     r"t.csv: landing.yaml \(table 1, files t.csv\) maps `user` to `who`, which the file does not have"),
    ("tables: [\n", r"landing.yaml: not valid YAML"),
])
def test_a_mapping_names_what_it_lacks(landing, mapping, message):
    folder = landing({"t.csv": "visitor,ts,href\nv1,1772449200,/a/b\n", "landing.yaml": mapping})
    with pytest.raises(IngestError, match=message):
        ingest_landing(folder, KEY)


def test_a_table_in_another_schema_without_a_mapping_says_how_to_read_it(landing):
    folder = landing({"clicks.csv": "visitor,ts,href\nv1,1772449200,/a/b\n"})
    with pytest.raises(IngestError, match=r"clicks.csv: missing required column\(s\).*mapping in landing.yaml"):
        ingest_landing(folder, KEY)


def test_a_mapping_reads_json_lines_too(landing):
    folder = landing({"clicks-day-1": '{"who": "v1", "when": "2026-03-02T10:00:00Z", "screen": "rds;list"}\n',
                      "landing.yaml": "tables:\n  - files: clicks-*\n    user: who\n    time: when\n"
                                      "    page: screen\n    service: screen\n"})
    events = ingest_landing(folder, KEY).events
    assert events.select("service", "page").rows() == [("rds;list", "rds;list")]
    assert events["user_id"][0].startswith("h") and events["session_id"][0].startswith(events["user_id"][0])


def test_json_documents_of_other_kinds_are_ignored_not_read(landing):
    folder = landing({"service_catalog.json": '{"s3": {"description": "object storage"}}\n',
                      "events.csv": "user_id,session_id,timestamp,service,page\nu1,s1,1772449200,s3,list\n"})
    result = ingest_landing(folder, KEY)
    assert result.ignored and result.ignored[0].startswith("service_catalog.json (not an event file")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_synthetic_world_as_each_export_reads_back_whole(tiny_world, tmp_path, fmt):
    """Every page view of the tiny world, rendered in a format and read back by its reader: none lost,
    the same users, services and pages (the world's sessions for the formats that carry one)."""
    world = ingest_landing(tiny_world.landing, KEY).events
    back = ingest_landing(render(tiny_world.landing, tmp_path / fmt, fmt), KEY)
    assert back.quarantine.height == 0 and back.events.height == world.height
    assert back.events["user_id"].n_unique() == world["user_id"].n_unique()
    assert set(back.events["service"]) == set(world["service"])
    pages = set(back.events["page"])
    if fmt == "cloudtrail":
        assert pages == set(world["page"])
    else:  # /{service}/{page}
        assert {tuple(p.split("/")[1:]) for p in pages} == set(world.select("service", "page").unique().rows())
    if fmt != "cloudtrail":  # CloudTrail has no session: its sessions are cut by the 30-minute gap
        sessions = [frame.select("user_id", "session_id").n_unique() for frame in (back.events, world)]
        assert sessions[0] == sessions[1]


def test_snowplow_in_parquet_with_typed_times_reads_like_its_csv(landing):
    table = pl.read_csv(EXPORTS / "export-2.csv", infer_schema=False, truncate_ragged_lines=True).head(9)
    typed = table.with_columns(pl.col("collector_tstamp", "derived_tstamp").str.to_datetime(strict=False))
    folder = landing({})
    typed.write_parquet(folder / "atomic-events")
    result = ingest_landing(folder, KEY)
    assert result.files.row(0, named=True) | {"parsed": None} == {
        "file": "atomic-events", "kind": "snowplow", "read": 9, "kept": 4, "quarantined": 2, "filtered": 3,
        "parsed": None}
    assert set(result.events["page"]) == {"/s3/buckets", "/ec2/instances/:id", "/iam/roles", "/"}


def _trail(*records: str) -> str:
    return '{"Records": [' + ", ".join(records) + "]}"


def _call(i: int, minute: int, user: str = "alice", **extra) -> str:
    import json

    return json.dumps({"eventTime": f"2026-03-02T10:{minute:02d}:00Z", "eventSource": "s3.amazonaws.com",
                       "eventName": f"Call{i}", "awsRegion": "us-east-1", "eventID": f"id-{i}",
                       "userIdentity": {"arn": f"arn:aws:iam::123456789012:user/{user}"},
                       "sessionCredentialFromConsole": "true", **extra})


def test_one_bad_cloudtrail_record_costs_only_itself(landing):
    folder = landing({"trail": _trail(_call(1, 0), '{"eventName": "X",}', _call(2, 1), _call(3, 2))})
    result = ingest_landing(folder, KEY)
    assert result.events["page"].to_list() == ["Call1", "Call2", "Call3"]
    assert _quarantined(result, "trail") == [(2, "invalid JSON")]


def test_sessions_and_repeated_ids_are_found_across_files(landing):
    """CloudTrail writes a file every five minutes: a console session runs over several, and a record
    delivered twice lands in two."""
    folder = landing({"a": _trail(_call(1, 0), _call(2, 4)), "b": _trail(_call(3, 6), _call(2, 4)),
                      "c": _trail(_call(4, 50))})
    result = ingest_landing(folder, KEY)
    sessions = result.events.group_by("session_id", maintain_order=True).agg("page")["page"].to_list()
    assert sessions == [["Call1", "Call2", "Call3"], ["Call4"]]  # 44 idle minutes before Call4
    assert _quarantined(result, "b") == [(2, "duplicate event id")]


def test_a_gzipped_export_cut_short_keeps_what_came_before_the_cut(landing):
    whole = gzip.compress((EXPORTS / "export-3.json").read_bytes())
    result = ingest_landing(landing({"segment-export": whole[: len(whole) * 2 // 3]}), KEY)
    assert result.events.height >= 1 and result.files["read"][0] == (
        result.files["kept"][0] + result.files["quarantined"][0] + result.files["filtered"][0])


@pytest.mark.parametrize("record", [
    '{"type": "page", "messageId": 5, "userId": "u1", "timestamp": "2026-03-02T10:00:00Z", '
    '"properties": {"path": "/a"}}',
    '{"type": "page", "messageId": "m", "userId": "u1", "timestamp": ["2026"], "properties": {"path": "/a"}}',
    '{"type": "page", "messageId": "m", "userId": "u1", "timestamp": "2026-03-02T10:00:00Z", '
    '"properties": {"url": 5}}',
    '{"type": "page", "messageId": "m", "userId": "\\ud800", "timestamp": "2026-03-02T10:00:00Z", "properties": []}',
])
def test_fields_of_the_wrong_type_cost_their_record_not_the_file(landing, record):
    good = '{"type": "page", "messageId": "g", "anonymousId": "a1", "timestamp": "2026-03-02T10:00:00Z", ' \
           '"properties": {"path": "/s3"}}'
    result = ingest_landing(landing({"calls": good + "\n" + record + "\n"}), KEY)
    row = result.files.row(0, named=True)
    assert row["read"] == 2 and row["kept"] + row["quarantined"] == 2 and "/s3" in result.events["page"].to_list()


def test_ga4_event_params_of_the_wrong_shape_cost_their_record(landing):
    rows = [(EXPORTS / "export-5.json").read_text().splitlines()[0],
            '{"event_name": "page_view", "user_pseudo_id": "1.2", "event_timestamp": "1772445600000000", '
            '"event_params": 5}']
    result = ingest_landing(landing({"ga": "\n".join(rows) + "\n"}), KEY)
    assert result.files["read"][0] == 2 and result.quarantine["reason"].to_list() == ["missing service"]


def test_identifiers_are_replaced_however_they_are_written(landing):
    record = ('{"type": "page", "messageId": "m1", "userId": 424242, "timestamp": "2026-03-02T10:00:00Z", '
              '"context": {"traits": {"name": "Zoe Quinn", "phone": "+1 555 0100"}, "ip": "2001:db8::7"}, '
              '"properties": {"path": "/users/zoe@example.com/keys", "user\\u0049d": "zoe-9"}}')
    result = ingest_landing(landing({"calls": record + "\n" + record + "\n"}), KEY)
    raw = result.quarantine["raw"][0]  # the second copy: a repeated messageId
    for word in ("424242", "Zoe Quinn", "+1 555 0100", "2001:db8::7", "zoe@example.com"):
        assert word not in raw
        assert not result.events.select(pl.all().cast(pl.String).str.contains(word, literal=True).any()).row(0)[0]
    assert result.events["page"][0].startswith("/users/h")  # an e-mail in a path is pseudonymized there too


def test_a_duplicate_id_whose_first_copy_is_bad_is_kept(landing):
    first = '{"type": "page", "messageId": "m1", "userId": "u1", "properties": {"path": "/a"}}'  # no time
    second = '{"type": "page", "messageId": "m1", "userId": "u1", "timestamp": "2026-03-02T10:00:00Z", ' \
             '"properties": {"path": "/a"}}'
    result = ingest_landing(landing({"calls": first + "\n" + second + "\n"}), KEY)
    assert result.events.height == 1 and _quarantined(result, "calls") == [(1, "missing timestamp")]


def test_a_mapped_json_field_no_record_has_is_null(landing):
    folder = landing({"clicks": '{"who": "v1", "when": "2026-03-02T10:00:00Z", "href": "/rds/list"}\n',
                      "landing.yaml": "tables:\n  - files: clicks\n    user: who\n    time: when\n"
                                      "    url: href\n    country: geo\n"})
    events = ingest_landing(folder, KEY).events
    assert events.select("service", "page", "country").rows() == [("rds", "/rds/list", None)]


def test_notes_that_merely_start_with_billing_are_not_billing(landing):
    folder = landing({"billing_notes.txt": "costs, as agreed\n",
                      "events.csv": "user_id,session_id,timestamp,service,page\nu1,s1,1772449200,s3,list\n"})
    found = {f.name: f.kind for f in discover(folder, KEY)}
    assert found["billing_notes.txt"] == "ignored"
