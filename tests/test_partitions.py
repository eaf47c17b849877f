"""The landing folder's files as `landing_files` partitions (registered, read one by one, checked per file), and
the tables built from them as day partitions (each day combined alone)."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest
from conftest import materialize_all

from sessionbert_assets.partitions import (
    RANGE_END,
    RANGE_START,
    SESSION_DAYS,
    day_tags,
    range_tags,
    runs_over_files,
    sync,
)
from sessionbert_core import storage
from sessionbert_core.data.combine import ingest_landing, kept_order
from sessionbert_core.data.ingest import discover

KEY = b"test-key"  # the synthetic files' names hold no identifier: any key gives the same names

HEADER = "user_id,session_id,timestamp,service,page\n"


def _rows(user: str, n: int) -> str:
    return "".join(f"{user},{user}-s,2026-03-02T10:{m:02d}:00Z,compute,page{m % 7}\n" for m in range(n))


def _partitions(result) -> dict[str, dict]:
    return {e.partition: {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("landing_files")}


def test_every_file_is_a_partition_read_alone_and_every_day_is_combined_alone(tiny_world, tmp_path):
    home, instance = tmp_path / "home", dg.DagsterInstance.ephemeral()
    result = materialize_all(home, "synthetic", selection=["landing_folder", "landing_files", "raw_sessions",
                                                           "quarantined_events"], instance=instance)
    assert result.success
    files = [f.name for f in discover(tiny_world.landing, KEY) if f.kind not in ("ignored", "mapping")]
    assert instance.get_dynamic_partitions("landing_files") == files
    figures = _partitions(result)
    assert sorted(figures) == sorted(files)
    for name, f in figures.items():
        assert f["state"] == "parsed" and f["read"] == f["valid"] + f["quarantined"] + f["filtered"] > 0, name
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "check_files_are_conserved"]
    assert check.passed and check.metadata["not_conserved"].value == "none"
    # the partitions' parses are what raw_sessions combines, a file a day: the same page views as one ingest
    expected = ingest_landing(tiny_world.landing, (home / "pseudonym.key").read_text().strip().encode()).events
    days = sorted({d.isoformat() for d in expected["timestamp"].dt.date()})
    assert [p.stem for p in storage.day_paths(home / "raw_sessions.parquet")] == days
    assert kept_order(storage.read_table(home / "raw_sessions.parquet")).equals(expected)
    raw = {e.partition for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("raw_sessions")}
    assert sorted(raw) == days  # one materialization a day, in one run
    quarantine = next(e for e in result.get_asset_materialization_events()
                      if e.asset_key == dg.AssetKey("quarantined_events"))
    assert quarantine.event_specific_data.materialization.metadata["files_parsed"].value == 0  # from the partitions


def test_a_bad_file_fails_its_own_partition_or_is_reported_there(landing, tmp_path):
    folder = landing({"events-good.csv": HEADER + _rows("u1", 30), "events-bad.csv": "user_id,when\nu1,now\n"})
    strict = materialize_all(tmp_path / "strict", str(folder), selection=["landing_folder", "landing_files"])
    assert not strict.success
    [failure] = [e for e in strict.all_events if e.is_step_failure]
    assert failure.step_key == "landing_files" and "events-bad.csv" in failure.step_failure_data.error.message
    tolerant = materialize_all(tmp_path / "tolerant", str(folder), selection=["landing_folder", "landing_files"],
                               run_config={"ops": {"landing_files": {"config": {"unreadable_files": "quarantine"}}}})
    assert tolerant.success
    figures = _partitions(tolerant)
    assert figures["events-bad.csv"]["state"] == "refused" and "missing required" in figures["events-bad.csv"][
        "problem"]
    assert figures["events-good.csv"]["valid"] == 30


def test_registration_follows_the_folder_and_a_run_spans_the_files_asked_for():
    instance = dg.DagsterInstance.ephemeral()
    assert sync(instance, ["a.csv", "b.csv", "c.csv"]) == ["a.csv", "b.csv", "c.csv"]
    assert sync(instance, ["a.csv", "c.csv", "d.csv"]) == ["a.csv", "c.csv", "d.csv"]  # b gone, d new, order kept
    assert range_tags(["a.csv", "c.csv", "d.csv"], ["d.csv", "c.csv"]) == {RANGE_START: "c.csv", RANGE_END: "d.csv"}
    assert range_tags([], None) == {}
    folder, files, raw, model = (dg.AssetKey(n) for n in ("landing_folder", "landing_files", "raw_sessions",
                                                           "tokenizer"))
    runs = runs_over_files([folder, files, raw, model], instance)
    assert next(runs) == ([folder], {})
    assert next(runs) == ([files], {RANGE_START: "a.csv", RANGE_END: "d.csv"})
    assert list(runs) == [([model], {})]  # no parse cache here: no day known, so no day asset runs
    assert list(runs_over_files([model], instance)) == [([model], {})]
    assert list(runs_over_files([files, raw], dg.DagsterInstance.ephemeral())) == []  # none registered


def test_a_run_spans_the_days_of_the_data_and_days_outside_the_partitions_are_refused():
    assert day_tags([date(2026, 3, 5), date(2026, 3, 2)]) == {RANGE_START: "2026-03-02", RANGE_END: "2026-03-05"}
    assert day_tags([]) == {}
    before = SESSION_DAYS.start.date().replace(year=SESSION_DAYS.start.year - 1)
    with pytest.raises(ValueError, match="SESSIONBERT_FIRST_DAY"):
        day_tags([before])
    with pytest.raises(ValueError, match="clock"):
        day_tags([date(2999, 1, 1)])


def test_a_table_kept_by_day_is_read_back_in_the_order_of_its_users(tmp_path):
    from sessionbert_assets.resources import ArtifactIOManager, SessionBertResource

    day = {"user_id": ["u2", "u1"], "start": [1, 2], "session_id": ["b", "a"]}
    for name in ("2026-03-03", "2026-03-02"):  # written in any order, a day at a time
        storage.write_day(pl.DataFrame(day), tmp_path / "session_splits.parquet", date.fromisoformat(name))
    manager = ArtifactIOManager(SessionBertResource(home=str(tmp_path)))
    loaded = manager.load_input(dg.build_input_context(asset_key=dg.AssetKey("session_splits"),
                                                       dagster_type=dg.PythonObjectDagsterType(pl.DataFrame)))
    assert loaded["user_id"].to_list() == ["u1", "u1", "u2", "u2"]
    assert loaded.equals(loaded.sort("user_id", "start", "session_id"))
