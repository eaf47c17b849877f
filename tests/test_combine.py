"""Files combined in parts of whole users give what one part over every row gives: the same page views,
sessions cut across files, duplicates across files, quarantine, billing, counts per file, and sessions."""

from __future__ import annotations

import shutil

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data.combine import Targets, combine_landing
from sessionbert_core.data.serialize import serialize_sessions, split_in_parts, split_sessions

KEY = b"test-key"
AGENT = '"-" "Mozilla/5.0 (X11; Linux x86_64)"'


def _log_line(host: str, time: str, path: str) -> str:
    return f'{host} - - [{time} +0000] "GET {path} HTTP/1.1" 200 512 {AGENT}'


def _landing(tiny_world, folder):
    shutil.copytree(tiny_world.landing, folder)
    # a duplicate across two files, a bad row, and access-log sessions that continue from one file to the next
    row = "u0000003,extra,2026-01-05T10:00:00Z,logs,log_groups\n"
    (folder / "extra-a.csv").write_text("user_id,session_id,timestamp,service,page\n" + row)
    (folder / "extra-b.csv").write_text("user_id,session_id,timestamp,service,page\n" + row
                                        + "u0000003,extra,not-a-time,logs,log_groups\n")
    hosts = [f"10.0.0.{i}" for i in range(1, 9)]
    (folder / "access-1.log").write_text("\n".join(_log_line(h, "17/May/2015:10:00:00", "/a") for h in hosts))
    (folder / "access-2.log").write_text("\n".join(
        _log_line(h, "17/May/2015:10:20:00", "/b") + "\n" + _log_line(h, "17/May/2015:10:20:00", "/b")
        for h in hosts))
    return folder


def _combined(landing, folder, rows_per_part):
    targets = Targets(folder / "events", folder / "quarantine", folder / "billing")
    result = combine_landing(landing, KEY, folder / "cache", targets, rows_per_part=rows_per_part)
    return result, {name: storage.read_table(getattr(targets, name)) for name in ("events", "quarantine", "billing")}


def test_parts_of_users_give_what_one_part_gives(tiny_world, tmp_path):
    landing = _landing(tiny_world, tmp_path / "landing")
    one, whole = _combined(landing, tmp_path / "one", rows_per_part=10**12)
    many, parts = _combined(landing, tmp_path / "many", rows_per_part=700)

    assert one.parts == 1 and many.parts > 5
    assert len(storage.part_paths(tmp_path / "many" / "events")) == many.parts
    assert parts["events"].equals(whole["events"])  # the parts in order are the whole table, sorted by user
    key = ["source_file", "line", "reason"]
    assert parts["quarantine"].sort(key).equals(whole["quarantine"].sort(key))
    reasons = whole["quarantine"].group_by("source_file", "reason").agg(rows=pl.len()).sort(pl.all())
    assert reasons.rows() == [("access-2.log", "duplicate event", 8), ("extra-b.csv", "duplicate event", 1),
                              ("extra-b.csv", "unparseable timestamp", 1)]
    billing_key = ["user_id", "date", "service", "cost"]
    assert parts["billing"].sort(billing_key).equals(whole["billing"].sort(billing_key))
    assert many.files.sort("file").equals(one.files.sort("file"))
    logs = parts["events"].filter(pl.col("page").is_in(["/a", "/b"]))  # the access logs' pseudonymized hosts
    # one session per host across the two files (20 minutes apart), the repeated view quarantined
    assert logs.group_by("user_id").agg(pl.col("session_id").n_unique())["session_id"].to_list() == [1] * 8
    assert logs.height == 16


def test_sessions_split_part_by_part_equal_the_whole_table(tiny_world, tmp_path):
    landing = _landing(tiny_world, tmp_path / "landing")
    _, parts = _combined(landing, tmp_path / "many", rows_per_part=700)
    got = split_in_parts(tmp_path / "many" / "events", tmp_path / "many" / "billing", tmp_path / "sessions", seed=3)

    expected = split_sessions(serialize_sessions(parts["events"], parts["billing"]), seed=3)
    assert storage.read_table(got.folder).equals(expected)
    assert got.rows == expected.height and len(storage.part_paths(got.folder)) > 5
