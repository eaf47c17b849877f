"""Hostile and careless input: nothing read outside the landing folder, no file type that crashes a run,
every good row kept, every bad record quarantined at its true line, and no raw client host stored."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import polars as pl
import pytest

from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import IngestError, discover
from sessionbert_core.data.landing_watch import look, probe

KEY = b"test-key"
HEADER = "user_id,session_id,timestamp,service,page\n"


def _row(user: str, second: int = 0, page: str = "home") -> str:
    return f"{user},{user}-s,2026-03-02T10:00:{second:02d}Z,svc,{page}"


def _good_csv(users: range) -> str:
    return HEADER + "\n".join(_row(f"u{i}", i % 60) for i in users) + "\n"


def _event(**overrides) -> dict:
    return {"user_id": "u1", "session_id": "s1", "timestamp": "2026-03-02T10:00:00Z", "service": "svc",
            "page": "home"} | overrides


def _conserved(result) -> None:
    for row in result.files.iter_rows(named=True):
        assert row["read"] == row["kept"] + row["quarantined"] + row["filtered"], row


# ----------------------------------------------------------------------------------------------
# the landing folder is the boundary


def test_a_symlink_out_of_the_landing_folder_is_listed_not_read(landing, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(_good_csv(range(100, 103)))
    secret = tmp_path / "passwd.log"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = landing({"events.csv": _good_csv(range(3))})
    (folder / "more.csv").symlink_to(outside)
    (folder / "users.log").symlink_to(secret)
    (folder / "inside.csv").symlink_to(folder / "events.csv")  # a link that stays inside is read
    result = ingest_landing(folder, KEY)
    assert sorted(result.events["user_id"].unique()) == ["u0", "u1", "u2"]  # the copy inside is a duplicate
    ignored = " ".join(result.ignored)
    assert "more.csv (a symlink to outside the landing folder (not read))" in ignored and "users.log" in ignored
    assert "root:x" not in json.dumps(result.quarantine.to_dicts())


def test_fifos_and_dangling_links_are_listed_as_ignored(landing, tmp_path):
    folder = landing({"events.csv": _good_csv(range(2))})
    os.mkfifo(folder / "pipe.csv")
    (folder / "gone.csv").symlink_to(tmp_path / "missing.csv")
    reasons = {f.name: f.reason for f in discover(folder, KEY) if f.kind == "ignored"}
    assert reasons == {"gone.csv": "a dangling symlink", "pipe.csv": "not a regular file (a FIFO, socket or device)"}
    assert ingest_landing(folder, KEY).events.height == 2


def test_the_sensor_does_not_follow_a_link_out(landing, tmp_path):
    outside = tmp_path / "other.csv"
    outside.write_text(_good_csv(range(5)))
    folder = landing({"events.csv": _good_csv(range(2))})
    (folder / "more.csv").symlink_to(outside)
    first = look(folder, None, KEY)
    second = look(folder, first.cursor, KEY)
    assert set(second.new) == {"events.csv"}


# ----------------------------------------------------------------------------------------------
# odd Parquet types and names: a clear error naming the file, or rows kept; never another exception


def test_a_list_typed_extra_column_is_kept_in_the_raw_row(landing):
    folder = landing({})
    pl.DataFrame([_event(), _event(user_id="u2")]).with_columns(tags=pl.Series([["t1"], []])).write_parquet(
        folder / "events.parquet")
    result = ingest_landing(folder, KEY)
    assert result.events.height == 2 and result.quarantine.height == 0


@pytest.mark.parametrize("column, values", [
    ("page", pl.Series([["a"], ["b"]])),
    ("timestamp", pl.Series([timedelta(seconds=1), timedelta(seconds=2)])),
])
def test_a_required_column_of_the_wrong_type_names_the_file(landing, column, values):
    folder = landing({"good.csv": _good_csv(range(2))})
    pl.DataFrame([_event(), _event(user_id="u2")]).with_columns(values.alias(column)).write_parquet(
        folder / "odd.parquet")
    with pytest.raises(IngestError, match=rf"odd.parquet: column `{column}` holds"):
        ingest_landing(folder, KEY)
    quarantined = ingest_landing(folder, KEY, unreadable="quarantine")
    assert quarantined.events.height == 2
    assert quarantined.quarantine.filter(pl.col("kind") == "file")["source_file"].to_list() == ["odd.parquet"]
    assert probe(_found(folder, "odd.parquet")).startswith("odd.parquet: column")


def test_binary_columns_with_invalid_utf8_are_quarantined_or_kept_untouched(landing):
    folder = landing({})
    pl.DataFrame([_event(), _event(user_id="u2")]).with_columns(
        page=pl.Series([b"home", b"ho\xffme"]), blob=pl.Series([b"\xfe", b"ok"])).write_parquet(folder / "e.parquet")
    result = ingest_landing(folder, KEY)
    assert result.events["user_id"].to_list() == ["u1"]
    bad = result.quarantine.row(0, named=True)
    assert bad["reason"] == "invalid UTF-8 in page" and "\\xff" in bad["raw"]


def test_a_file_name_that_is_not_utf8_is_read_under_an_escaped_name(landing):
    folder = landing({"events.csv": _good_csv(range(2))})
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.csv")
    with open(odd, "wb") as handle:
        handle.write(_good_csv(range(5, 7)).encode())
    result = ingest_landing(folder, KEY, cache=folder.parent / "cache")
    assert result.events["user_id"].n_unique() == 4
    assert "caf\\xe9.csv" in result.files["file"].to_list()


# ----------------------------------------------------------------------------------------------
# CSV and JSON lines: a bad record costs only itself, at its true line


def test_an_unbalanced_quote_costs_only_its_own_line(landing):
    lines = ['q0,q0-s,2026-03-02T10:01:00Z,svc0,"unclosed page'] + [_row(f"g{i}", i) for i in range(15)]
    result = ingest_landing(landing({"events.csv": HEADER + "\n".join(lines) + "\n"}), KEY)
    assert result.events["user_id"].n_unique() == 15
    assert result.quarantine.select("line", "reason").rows() == [(2, "unbalanced quote")]
    assert result.files.select("read", "kept", "quarantined").row(0) == (16, 15, 1)


def test_a_quoted_line_break_is_one_record(landing):
    content = HEADER + 'u1,s1,2026-03-02T10:00:00Z,svc,"two\nlines"\n' + _row("u2") + "\n"
    result = ingest_landing(landing({"events.csv": content}), KEY)
    assert result.events["user_id"].to_list() == ["u2"]  # read on, at line 4
    assert result.quarantine.select("line", "reason").rows() == [(2, "control character in page")]
    assert result.files.select("read", "kept", "quarantined").row(0) == (2, 1, 1)


def test_one_huge_field_and_a_ragged_row_cost_only_their_rows_in_csv(landing):
    lines = [_row("u1"), "u2,u2-s,2026-03-02T10:00:00Z,svc," + "x" * 1_000_000, _row("u3") + ",surplus", _row("u4")]
    result = ingest_landing(landing({"events.csv": HEADER + "\n".join(lines)}), KEY)
    assert sorted(result.events["user_id"]) == ["u1", "u4"]
    assert result.quarantine["reason"].to_list() == ["page longer than 512 characters", "wrong number of fields"]


@pytest.mark.parametrize("bad_line, reason", [
    ("[" * 100_000 + "]" * 100_000, "JSON value is not an object"),
    ('{"user_id": "u9", "session_id": "s", "timestamp": ' + "9" * 5000 + ', "service": "a", "page": "b"}',
     "invalid JSON"),
    ('{"user_id": "\\ud800", "session_id": "s", "timestamp": 1, "service": "a", "page": "b"}', "invalid Unicode"),
    ('{"user_id": true, "session_id": "s", "timestamp": 1, "service": "a", "page": "b"}', "user_id is not text"),
    ('{"user_id": "u9", "session_id": "s", "timestamp": 1, "service": "a", "page": {"x": 1}}', "page is not text"),
])
def test_one_bad_json_line_is_one_quarantine_row(landing, bad_line, reason):
    lines = [json.dumps(_event()), bad_line, json.dumps(_event(user_id="u2"))]
    result = ingest_landing(landing({"events.jsonl": "\n".join(lines)}), KEY)
    assert result.events["user_id"].to_list() == ["u1", "u2"]
    assert result.quarantine.select("line", "reason").rows() in ([(2, reason)], [(2, "invalid JSON")])
    _conserved(result)


def test_a_byte_order_mark_does_not_cost_the_first_line(landing):
    lines = [json.dumps(_event()), json.dumps(_event(user_id="u2"))]
    folder = landing({"events.jsonl": "\ufeff" + "\n".join(lines), "more.csv": "\ufeff" + _good_csv(range(3, 5))})
    assert ingest_landing(folder, KEY).events.height == 4


def test_blank_lines_are_filtered_not_quarantined(landing):
    content = HEADER + _row("u1") + "\n\n   \n" + _row("u2") + "\n"
    result = ingest_landing(landing({"events.csv": content}), KEY)
    assert result.quarantine.height == 0 and result.events.height == 2
    assert result.filtered.rows() == [("events.csv", "blank line", 2)]
    _conserved(result)


def test_empty_files_of_every_kind_read_as_no_rows(landing):
    folder = landing({"events.csv": _good_csv(range(2)), "empty.csv": "", "empty.jsonl": "", "empty.parquet": "",
                      "empty.log": ""})
    result = ingest_landing(folder, KEY)
    assert result.events.height == 2
    assert result.files.filter(pl.col("file").str.starts_with("empty"))["read"].to_list() == [0, 0, 0, 0]


def test_a_repeated_csv_column_names_the_file(landing):
    folder = landing({"events.csv": "user_id,session_id,timestamp,service,page,page\nu1,s1,1772445600,a,b,c\n"})
    with pytest.raises(IngestError, match=r"events\.csv: column\(s\) page appear more than once"):
        ingest_landing(folder, KEY)
    assert "appear more than once" in probe(_found(folder, "events.csv"))


def test_latin1_bytes_are_quarantined_with_the_raw_row_untouched(landing):
    folder = landing({"events.csv": (HEADER + "u1,s1,2026-03-02T10:00:00Z,svc,caf").encode() + b"\xe9\n"})
    bad = ingest_landing(folder, KEY).quarantine.row(0, named=True)
    assert bad["reason"] == "invalid UTF-8 in page" and bad["raw"].endswith("caf\\xe9")


# ----------------------------------------------------------------------------------------------
# values normalized before duplicates are found; identifiers and characters refused with a reason


def test_padded_duplicates_are_found(landing):
    lines = ["w0,s1,2026-03-02T10:00:00Z,svc,p", " w0,s1,2026-03-02T10:00:00Z,svc,p",
             "w0 ,s1 ,2026-03-02T10:00:00Z,svc , p"]
    result = ingest_landing(landing({"events.csv": HEADER + "\n".join(lines)}), KEY)
    assert result.events.height == 1
    assert result.quarantine["reason"].to_list() == ["duplicate event", "duplicate event"]


def test_float_and_bool_ids_are_refused(landing):
    folder = landing({})
    pl.DataFrame([_event(), _event()]).with_columns(user_id=pl.Series([float("nan"), 201.0])).write_parquet(
        folder / "f.parquet")
    pl.DataFrame([_event(), _event(session_id="s2")]).with_columns(
        user_id=pl.lit("ok"), session_id=pl.Series([True, False])).write_parquet(folder / "b.parquet")
    pl.DataFrame([_event(user_id="kept")]).write_parquet(folder / "g.parquet")
    result = ingest_landing(folder, KEY)
    assert result.events["user_id"].to_list() == ["kept"]
    assert set(result.quarantine["reason"]) == {"user_id is a floating-point number, not an identifier",
                                                 "session_id is true/false, not an identifier"}


@pytest.mark.parametrize("character", ["\u0085", "\u2028", "\u202e", "\u200b", "\x07"])
def test_unicode_controls_and_invisible_marks_are_quarantined(landing, character):
    content = HEADER + _row("u1") + "\n" + _row("u2", page=f"ho{character}me") + "\n"
    result = ingest_landing(landing({"events.csv": content}), KEY)
    assert result.events["user_id"].to_list() == ["u1"]
    assert result.quarantine["reason"].to_list() == ["control character in page"]


# ----------------------------------------------------------------------------------------------
# no raw identifier stored


LOG_LINES = [
    '203.0.113.7 - alice [02/Mar/2026:10:00:00 +0000] "GET /billing/invoices HTTP/1.1" 200 512 "-" "Mozilla/5.0"',
    '203.0.113.7 - alice [02/Mar/2026:10:00:00 +0000] "GET /billing/invoices HTTP/1.1" 200 512 "-" "Mozilla/5.0"',
    '198.51.100.23 - - [02/Mar/2026:10:05:00 +0000] "GET /compute/instances HTTP/1.1" 200 99 "-" "Mozilla/5.0"',
    '198.51.100.23 - - [not a time] "GET /compute HTTP/1.1" 200 99 "-" "Mozilla/5.0"',
    "192.0.2.99 this line is not a log line",
]


def test_no_raw_client_host_or_user_is_stored(landing, tmp_path):
    folder = landing({"access.log": "\n".join(LOG_LINES) + "\n"})
    cache = tmp_path / "home" / "ingest_cache"
    result = ingest_landing(folder, KEY, cache=cache)
    assert result.quarantine.height == 3  # a duplicate, a bad time, a line that is no log line
    stored = b"".join(json.dumps(pl.read_parquet(p).to_dicts(), default=str).encode() if p.suffix == ".parquet"
                      else p.read_bytes() for p in cache.rglob("*") if p.is_file())  # Parquet compresses: read it
    stored += json.dumps(result.quarantine.to_dicts()).encode()
    for identifier in (b"203.0.113.7", b"198.51.100.23", b"192.0.2.99", b"alice"):
        assert identifier not in stored, identifier
    assert all(raw.startswith("h") for raw in result.quarantine["raw"])  # the pseudonym stands where the host was


def _found(folder, name: str):
    """The landing folder's file of that name, as discovery classifies it."""
    return next(f for f in discover(folder, KEY) if f.name == name)
