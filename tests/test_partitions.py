"""The landing folder's files as `landing_files` partitions: registered, read one by one, checked per file."""

from __future__ import annotations

import dagster as dg
import polars as pl
from conftest import materialize_all

from sessionbert_assets.partitions import RANGE_END, RANGE_START, range_tags, runs_over_files, sync
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import discover

HEADER = "user_id,session_id,timestamp,service,page\n"


def _rows(user: str, n: int) -> str:
    return "".join(f"{user},{user}-s,2026-03-02T10:{m:02d}:00Z,compute,page{m % 7}\n" for m in range(n))


def _partitions(result) -> dict[str, dict]:
    return {e.partition: {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("landing_files")}


def test_every_file_is_a_partition_read_alone_and_the_combined_ingest_is_unchanged(tiny_world, tmp_path):
    home, instance = tmp_path / "home", dg.DagsterInstance.ephemeral()
    result = materialize_all(home, "synthetic", selection=["landing_folder", "landing_files", "raw_sessions"],
                             instance=instance)
    assert result.success
    files = [f.name for f in discover(tiny_world.landing) if f.kind not in ("ignored", "mapping")]
    assert instance.get_dynamic_partitions("landing_files") == files
    figures = _partitions(result)
    assert sorted(figures) == sorted(files)
    for name, f in figures.items():
        assert f["state"] == "parsed" and f["read"] == f["valid"] + f["quarantined"] + f["filtered"] > 0, name
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "check_files_are_conserved"]
    assert check.passed and check.metadata["not_conserved"].value == "none"
    # the partitions' parses are what raw_sessions combines: the same page views as one ingest of the folder
    expected = ingest_landing(tiny_world.landing, (home / "pseudonym.key").read_text().strip().encode()).events
    assert pl.read_parquet(home / "raw_sessions.parquet").equals(expected)
    raw = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("raw_sessions"))
    assert raw.event_specific_data.materialization.metadata["files_parsed"].value == 0  # all from the partitions


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
    folder, files, raw = (dg.AssetKey(n) for n in ("landing_folder", "landing_files", "raw_sessions"))
    runs = runs_over_files([folder, files, raw], instance)
    assert next(runs) == ([folder], {})
    assert next(runs) == ([files, raw], {RANGE_START: "a.csv", RANGE_END: "d.csv"})
    assert list(runs_over_files([raw], instance)) == [([raw], {})]
    assert list(runs_over_files([files, raw], dg.DagsterInstance.ephemeral())) == [([raw], {})]  # none registered
