"""Files combined day by day give what one pass over every row gives: the same page views, sessions cut across
files, duplicates across files, quarantine, billing and counts per file; a new day costs that day alone."""

from __future__ import annotations

import shutil
from datetime import date

import polars as pl
import pytest

from sessionbert_core import storage
from sessionbert_core.data.combine import (
    Targets,
    combine_days,
    combine_landing,
    kept_order,
    landing_tables,
    read_landing,
)
from sessionbert_core.data.serialize import serialize_sessions, split_days, split_sessions
from sessionbert_core.errors import IngestError

KEY = b"test-key"
AGENT = '"-" "Mozilla/5.0 (X11; Linux x86_64)"'
HEADER = "user_id,session_id,timestamp,service,page\n"


def _log_line(host: str, time: str, path: str) -> str:
    return f'{host} - - [{time} +0000] "GET {path} HTTP/1.1" 200 512 {AGENT}'


def _landing(tiny_world, folder):
    shutil.copytree(tiny_world.landing, folder)
    # a duplicate across two files, a bad row, and access-log sessions that continue from one file to the next
    row = "u0000003,extra,2026-01-05T10:00:00Z,logs,log_groups\n"
    (folder / "extra-a.csv").write_text(HEADER + row)
    (folder / "extra-b.csv").write_text(HEADER + row + "u0000003,extra,not-a-time,logs,log_groups\n")
    hosts = [f"10.0.0.{i}" for i in range(1, 9)]
    (folder / "access-1.log").write_text("\n".join(_log_line(h, "17/May/2015:10:00:00", "/a") for h in hosts))
    (folder / "access-2.log").write_text("\n".join(
        _log_line(h, "17/May/2015:10:20:00", "/b") + "\n" + _log_line(h, "17/May/2015:10:20:00", "/b")
        for h in hosts))
    return folder


def _tables(folder):
    return Targets(folder / "events", folder / "quarantine", folder / "billing")


def test_each_day_combined_alone_gives_what_every_day_at_once_gives(tiny_world, tmp_path):
    landing = read_landing(_landing(tiny_world, tmp_path / "landing"), KEY, tmp_path / "cache")
    days = landing.days()
    at_once = {d.day: d for d in combine_days(landing, days)}
    assert len(days) == 45 + 2  # the world's days, the extra file's, the access logs'
    for day in days:
        [alone] = combine_days(landing, [day])
        assert alone.events.equals(at_once[day].events) and alone.duplicates.equals(at_once[day].duplicates)
        assert alone.billing.equals(at_once[day].billing) and alone.counts.equals(at_once[day].counts)
    logs = at_once[date(2015, 5, 17)].events
    # one session per host across the two files (20 minutes apart), the repeated view quarantined
    assert logs.group_by("user_id").agg(pl.col("session_id").n_unique())["session_id"].to_list() == [1] * 8
    assert logs.height == 16 and at_once[date(2015, 5, 17)].duplicates.height == 8


def test_the_tables_by_day_hold_every_row_read_once(tiny_world, tmp_path):
    landing = _landing(tiny_world, tmp_path / "landing")
    result = combine_landing(landing, KEY, tmp_path / "cache", _tables(tmp_path / "out"))
    quarantine = storage.read_table(tmp_path / "out" / "quarantine")
    reasons = quarantine.group_by("source_file", "reason").agg(rows=pl.len()).sort(pl.all())
    assert reasons.rows() == [("access-2.log", "duplicate event", 8), ("extra-b.csv", "duplicate event", 1),
                              ("extra-b.csv", "unparseable timestamp", 1)]
    files = result.files.filter(pl.col("kind") != "billing")
    assert files["kept"].sum() == result.events.rows == storage.read_table(result.events.folder).height
    assert result.billing.rows == storage.read_table(result.billing.folder).height > 0
    assert (result.files["read"] == result.files["kept"] + result.files["quarantined"] + result.files["filtered"]).all()
    assert result.parts == len(storage.day_paths(result.events.folder)) == 47


def test_a_new_day_is_combined_alone_and_gives_what_combining_everything_gives(tiny_world, tmp_path):
    folder = _landing(tiny_world, tmp_path / "landing")
    tables = _tables(tmp_path / "out")
    combine_landing(folder, KEY, tmp_path / "cache", tables)
    before = {p.name: p.stat().st_mtime_ns for p in storage.day_paths(tables.events)}
    (folder / "late.csv").write_text(HEADER + "u0000003,late,2026-05-20T09:00:00Z,logs,search\n"
                                     + "u0000003,late,2026-05-20T09:01:00Z,metrics,alarms\n")
    landing = read_landing(folder, KEY, tmp_path / "cache")
    new = sorted(set(landing.days()) - {date.fromisoformat(name[:10]) for name in before})
    assert new == [date(2026, 5, 20)]
    days = tables.days()
    with pytest.raises(IngestError, match="2026-05-20"):  # a day not combined yet is named, not lost
        landing_tables(landing, days, tables.quarantine)
    for day in combine_days(landing, new):
        days.write(day)
    result = landing_tables(landing, days, tables.quarantine)
    assert {p.name: p.stat().st_mtime_ns for p in storage.day_paths(tables.events) if p.name in before} == before
    again = combine_landing(folder, KEY, tmp_path / "cache", _tables(tmp_path / "again"))
    assert storage.read_table(tables.events).equals(storage.read_table(again.events.folder))
    assert result.files.drop("parsed").sort("file").equals(again.files.drop("parsed").sort("file"))


def test_a_session_past_midnight_goes_on_under_a_key_of_its_own(landing, tmp_path):
    rows = ["u1,s1,2026-03-02T23:50:00Z,logs,search", "u1,s1,2026-03-02T23:55:00Z,logs,view",
            "u1,s1,2026-03-03T00:05:00Z,metrics,alarms", "u1,s2,2026-03-03T08:00:00Z,logs,search"]
    result = combine_landing(landing({"events.csv": HEADER + "\n".join(rows) + "\n"}), KEY, tmp_path / "cache",
                             _tables(tmp_path / "out"))
    events = kept_order(storage.read_table(result.events.folder))
    assert events["session_id"].to_list() == ["s1", "s1", "s1@2026-03-03", "s2"]
    assert result.files["kept"].to_list() == [4]


def test_sessions_split_day_by_day_equal_the_whole_table(tiny_world, tmp_path):
    result = combine_landing(tiny_world.landing, KEY, tmp_path / "cache", _tables(tmp_path / "out"))
    days = [date.fromisoformat(p.stem) for p in storage.day_paths(result.events.folder)]
    written = split_days(result.events.folder, result.billing.folder, tmp_path / "sessions", days, seed=3)

    expected = split_sessions(serialize_sessions(storage.read_table(result.events.folder),
                                                 storage.read_table(result.billing.folder)), seed=3)
    got = storage.read_table(tmp_path / "sessions").sort("user_id", "start", "session_id")
    assert got.equals(expected.sort("user_id", "start", "session_id"))
    assert sum(p.rows for p in written) == expected.height and len(written) == len(days) == 45


def test_a_day_serialized_alone_equals_that_day_of_a_run_over_every_day(tiny_world, tmp_path):
    result = combine_landing(tiny_world.landing, KEY, tmp_path / "cache", _tables(tmp_path / "out"))
    days = [date.fromisoformat(p.stem) for p in storage.day_paths(result.events.folder)]
    split_days(result.events.folder, result.billing.folder, tmp_path / "every", days)
    for day in (date(2026, 4, 1), days[-1]):  # the first of a month, and a day with the month's billing before it
        split_days(result.events.folder, result.billing.folder, tmp_path / "alone", [day])
        alone = storage.read_table(storage.day_paths(tmp_path / "alone", [day]))
        assert alone.equals(storage.read_table(storage.day_paths(tmp_path / "every", [day])))
        assert alone["context"].str.contains("monthly_billed_token").any() == (day != date(2026, 4, 1))
