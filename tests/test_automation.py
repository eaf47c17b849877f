"""Sensor-triggered retraining: the landing-folder sensor's ticks, the ingestion that follows by declarative
automation, the drift that decides how much to retrain, and a new file carried all the way to a re-fine-tuned
model and a refreshed table."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date

import dagster as dg
import polars as pl
import pytest

from sessionbert_assets.automation import (
    REASON,
    TRIGGER,
    files_job,
    ingest_job,
    ingestion_automation,
    main_job,
    new_data_sensor,
    new_days_sensor,
    retrain_sensor,
)
from sessionbert_assets.conditions import FOLLOWERS
from sessionbert_assets.definitions import build_definitions
from sessionbert_assets.partitions import DAY_ASSETS, RANGE_END, RANGE_START, execute_over_files
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.model.tokenizer import KNOWN_ACTIVITIES, vocabulary_drift

INGESTED = [dg.AssetKey(k) for k in ("landing_folder", "landing_files", "raw_sessions", "quarantined_events",
                                      "billing_records")]
HEADER = "user_id,session_id,timestamp,service,page\n"
ROWS = "u1,s1,2026-03-02T10:00:00Z,compute,instances\nu1,s1,2026-03-02T10:01:00Z,compute,launch\n"


def _tick(landing, cursor: str | None = None, home=None, instance: dg.DagsterInstance | None = None
          ) -> dg.SensorResult:
    home = home or landing.parent / "home"
    resource = SessionBertResource(home=str(home), source=str(landing), profile="tiny")
    context = dg.build_sensor_context(cursor=cursor, resources={"sessionbert": resource},
                                      instance=instance or dg.DagsterInstance.ephemeral())
    return new_data_sensor.evaluate_tick(context)


def _apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's partition requests: the files it adds or forgets."""
    for change in result.dynamic_partitions_requests or []:
        if isinstance(change, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(change.partitions_def_name, list(change.partition_keys))
        else:
            for key in change.partition_keys:
                instance.delete_dynamic_partition(change.partitions_def_name, key)


def _write(path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def test_a_new_file_triggers_once_after_it_settles(landing):
    folder = landing({})
    _write(folder / "events-1.csv", HEADER + ROWS, 1_000)
    first = _tick(folder)
    assert not first.run_requests and "waiting for 1 file" in first.skip_message  # seen once: may be mid-copy
    second = _tick(folder, first.cursor)
    [request] = second.run_requests
    assert request.run_key.startswith("new-data-") and request.tags[TRIGGER] == "new_data"
    assert "events-1.csv" in request.tags[REASON]
    third = _tick(folder, second.cursor)  # a restart: the stored cursor, nothing new
    assert not third.run_requests and "no new settled file" in third.skip_message


def test_a_file_still_being_written_is_not_picked_up(landing):
    folder = landing({})
    _write(folder / "events-1.csv", HEADER + ROWS[:30], 1_000)
    first = _tick(folder)
    _write(folder / "events-1.csv", HEADER + ROWS, 2_000)  # grew since the last look
    second = _tick(folder, first.cursor)
    assert not second.run_requests and "waiting" in second.skip_message
    third = _tick(folder, second.cursor)
    assert len(third.run_requests) == 1


def test_the_same_content_again_does_not_trigger_and_new_content_does(landing):
    folder = landing({})
    _write(folder / "events-1.csv", HEADER + ROWS, 1_000)
    settled = _tick(folder, _tick(folder).cursor)
    cursor = settled.cursor
    os.utime(folder / "events-1.csv", ns=(5_000, 5_000))  # touched: same bytes
    touched = _tick(folder, _tick(folder, cursor).cursor)
    assert not touched.run_requests
    _write(folder / "events-1.csv", HEADER + ROWS.replace("launch", "stop"), 9_000)
    changed = _tick(folder, _tick(folder, touched.cursor).cursor)
    [request] = changed.run_requests
    assert request.run_key != settled.run_requests[0].run_key


def test_run_keys_come_from_content_not_from_the_tick(landing, tmp_path):
    keys = []
    for name in ("a", "b"):
        folder = tmp_path / name / "landing"
        folder.mkdir(parents=True)
        _write(folder / "events-1.csv", HEADER + ROWS, 1_000 if name == "a" else 7_000)
        keys.append(_tick(folder, _tick(folder).cursor).run_requests[0].run_key)
    assert keys[0] == keys[1]  # same names and bytes, whenever written: one key, so Dagster runs it once


def test_a_bad_file_is_reported_and_does_not_block_a_good_one(landing, tmp_path):
    folder = landing({})
    many = "".join(f"u1,s1,2026-03-02T10:{m:02d}:00Z,compute,page{m}\n" for m in range(40))
    _write(folder / "events-good.csv", HEADER + many, 1_000)  # a refused file counts as one quarantined row
    _write(folder / "events-bad.csv", "user_id,when\nu1,yesterday\n", 1_000)
    instance = dg.DagsterInstance.ephemeral()
    result = _tick(folder, _tick(folder).cursor, instance=instance)
    [request] = result.run_requests
    assert "events-good.csv" in request.tags[REASON] and "refused: events-bad.csv" in request.tags[REASON]
    # the runs it leads to ingest the good file and quarantine the bad one as a file
    sessionbert = SessionBertResource(home=str(tmp_path / "home"), source=str(folder), profile="tiny")
    _apply(instance, result)
    assert _execute(build_definitions(sessionbert), sessionbert, instance, INGESTED, request.tags)
    quarantine = pl.read_parquet(tmp_path / "home" / "quarantined_events.parquet")
    assert quarantine.filter(pl.col("kind") == "file")["source_file"].to_list() == ["events-bad.csv"]
    assert pl.read_parquet(tmp_path / "home" / "raw_sessions.parquet").height == 40  # one day: one file


def test_only_a_bad_file_starts_nothing(landing):
    folder = landing({})
    _write(folder / "events-bad.csv", "user_id,when\nu1,yesterday\n", 1_000)
    result = _tick(folder, _tick(folder).cursor)
    assert not result.run_requests and "missing required column(s)" in result.skip_message


def test_files_ingestion_already_read_are_not_new_without_a_cursor(landing, tmp_path):
    folder = landing({})
    _write(folder / "events-1.csv", HEADER + ROWS, 1_000)
    sessionbert = SessionBertResource(home=str(tmp_path / "home"), source=str(folder), profile="tiny")
    assert _execute(build_definitions(sessionbert), sessionbert, dg.DagsterInstance.ephemeral(), INGESTED)
    fresh = _tick(folder, _tick(folder).cursor)  # e.g. `make run`, then `make ui` for the first time
    assert not fresh.run_requests


def test_a_broken_mapping_is_said_by_the_sensor_not_raised(landing):
    folder = landing({"events-1.csv": HEADER + ROWS, "landing.yaml": "tables:\n  - files: x.csv\n    user: v\n"})
    assert "landing.yaml: table 1 (x.csv) maps no `time` column" in _tick(folder).skip_message


def test_the_synthetic_source_is_watched_once_generated(tmp_path):
    resource = SessionBertResource(home=str(tmp_path / "home"), source="synthetic", profile="tiny")
    result = new_data_sensor.evaluate_tick(dg.build_sensor_context(resources={"sessionbert": resource}))
    assert "materialize landing_folder" in result.skip_message


def test_drift_counts_recent_page_views_in_unseen_activities():
    old, day = date(2026, 1, 1), date(2026, 3, 1)  # the old day is outside the 7-day window
    sessions = pl.DataFrame({"day": [old, day, day, day],
                             "activities": [["old;1"], ["a;1", "a;2"], ["a;1", "new;1"], ["new;1"]]})
    drift = vocabulary_drift(sessions, {"a;1", "a;2"}, window_days=7)
    assert drift["drift"] == pytest.approx(2 / 5) and drift["top_unseen"] == ["new;1 (2)"]


@pytest.fixture
def retrained_home(trained, tmp_path):
    """A copy of the trained tiny home, so these tests may add data to it."""
    home, _ = trained
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return copy


def _execute(defs: dg.Definitions, sessionbert: SessionBertResource, instance: dg.DagsterInstance,
             keys: list[dg.AssetKey], tags: dict | None = None) -> list[bool]:
    """`keys` in the runs `make run` would use (landing_folder, then the files, then the rest over their days):
    whether each run succeeded."""
    jobs = {"main": defs.resolve_job_def(main_job.name), "files": defs.resolve_job_def(files_job.name)}
    return [r.success for r in execute_over_files(jobs, instance, keys, sessionbert.home_path / "ingest_cache",
                                                  tags=tags)]


def _ingest(sessionbert: SessionBertResource, instance: dg.DagsterInstance, tags: dict) -> bool:
    """The landing folder and its files read, then `ingest_days` over every day they hold."""
    defs = build_definitions(sessionbert)
    keys = sorted(ingest_job.selection.resolve(defs.resolve_asset_graph()))
    return all(_execute(defs, sessionbert, instance, [*INGESTED[:2], *keys], tags))


def _new_day_file(home, folder) -> None:
    """A new day of traffic: the last day's sessions again, a day later, under new session ids."""
    raw = pl.read_parquet(home / "raw_sessions.parquet")
    last = raw.filter(pl.col("timestamp").dt.date() == raw["timestamp"].max().date())
    shifted = last.with_columns(pl.col("timestamp") + pl.duration(days=1), pl.col("session_id") + "-next")
    shifted.write_parquet(folder / "events-next-day.parquet")


def _follow(defs: dg.Definitions, instance: dg.DagsterInstance, cursor=None):
    """One tick of `ingestion_automation`: the assets its conditions request, and the tick's result."""
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor,
                                             asset_selection=ingestion_automation.asset_selection)
    return {key for key in FOLLOWERS if tick.get_num_requested(dg.AssetKey(key))}, tick


def test_new_data_reaches_a_refined_model_and_a_refreshed_table(retrained_home):
    home = retrained_home
    sessionbert = SessionBertResource(home=str(home), source="synthetic", profile="tiny", seed=0)
    defs = build_definitions(sessionbert)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(sessionbert, instance, {})  # this instance's history: every file read and ingested once
    requested, settled = _follow(defs, instance)
    assert requested == set()  # ingested data in, nothing to follow
    landing = sessionbert.landing_path()
    cursor = new_data_sensor.evaluate_tick(dg.build_sensor_context(resources={"sessionbert": sessionbert},
                                                                   instance=instance)).cursor
    days_cursor = new_days_sensor.evaluate_tick(dg.build_sensor_context(resources={"sessionbert": sessionbert},
                                                                        instance=instance)).cursor
    _new_day_file(home, landing)
    for _ in range(2):  # seen, then settled
        tick = new_data_sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=instance,
                                                                     resources={"sessionbert": sessionbert}))
        cursor = tick.cursor
    [request] = tick.run_requests
    assert "events-next-day.parquet" in request.tags[REASON]
    assert request.tags[RANGE_START] == request.tags[RANGE_END] == "events-next-day.parquet"  # its partition
    _apply(instance, tick)
    served = home / "recommendation_table.parquet"
    before = served.stat().st_mtime_ns
    read = defs.resolve_job_def(files_job.name).execute_in_process(instance=instance, tags=request.tags,
                                                                   run_config=request.run_config)
    parsed = [e.partition for e in read.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey("landing_files")]
    assert parsed == ["events-next-day.parquet"]  # only the new file's partition ran, and it parsed the file
    assert next(e for e in read.get_asset_materialization_events() if e.partition == parsed[0]
                ).event_specific_data.materialization.metadata["state"].value == "parsed"
    # the new-days sensor: the file's parse holds one day, and only that day is computed again, in one run with
    # the quarantine over every day and its check
    days = new_days_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=days_cursor,
                                                                 resources={"sessionbert": sessionbert}))
    [combine] = days.run_requests
    new_day = (pl.read_parquet(landing / "events-next-day.parquet")["timestamp"].max().date()).isoformat()
    assert combine.tags[RANGE_START] == combine.tags[RANGE_END] == new_day and combine.tags[TRIGGER] == "new_data"
    combined = defs.resolve_job_def(ingest_job.name).execute_in_process(instance=instance, tags=combine.tags)
    materialized = {(e.asset_key.to_user_string(), e.partition) for e in combined.get_asset_materialization_events()}
    assert materialized == {(name, new_day) for name in DAY_ASSETS} | {("quarantined_events", None)}
    quarantine = next(e for e in combined.get_asset_materialization_events() if e.partition is None)
    metadata = quarantine.event_specific_data.materialization.metadata
    # incremental: the new file's partition parsed it, and quarantined_events found every file in the cache
    assert metadata["files_parsed"].value == 0 and metadata["files_from_cache"].value > 2
    assert metadata["refreshed_because"].value == combine.tags[REASON]
    # declarative automation: nothing left to follow, the sensor's run held all of it
    requested, followed = _follow(defs, instance, settled.cursor)
    assert requested == set()
    drift = json.loads((home / "vocabulary_drift.json").read_text())
    assert drift["needs_pretraining"] is False and drift["drift"] < 0.01  # the same activities, a day later
    retrain = retrain_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    [again] = retrain.run_requests
    assert again.job_name == "finetune_and_refresh" and "re-fine-tune only" in again.tags[REASON]
    result = defs.resolve_job_def("finetune_and_refresh").execute_in_process(instance=instance, tags=again.tags,
                                                                            raise_on_error=False)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"finetuned_model", "model_evaluation", "user_personas", "recommendation_table"} <= materialized
    assert "pretrained_model" not in materialized and "tokenizer" not in materialized
    assert served.stat().st_mtime_ns > before
    table = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "recommendation_table")
    moved = table.event_specific_data.materialization.metadata  # against the table it replaced
    assert 0.0 <= moved["churn/share"].value <= 1.0 and moved["churn/users_compared"].value > 0
    stable = next(c for c in result.get_asset_check_evaluations() if c.check_name == "personas_are_stable")
    assert stable.metadata["users_compared"].value > 0  # the retrained clusters against the previous ones
    assert not retrain_sensor.evaluate_tick(dg.build_sensor_context(instance=instance,
                                                                    cursor=retrain.cursor)).run_requests
    assert _follow(defs, instance, followed.cursor)[0] == set()  # followed once: nothing is requested again


def test_no_pretrained_model_means_a_full_retrain(retrained_home):
    home = retrained_home
    shutil.rmtree(home / "pretrained_model")
    sessionbert = SessionBertResource(home=str(home), source="synthetic", profile="tiny", seed=0)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(sessionbert, instance, {TRIGGER: "new_data", REASON: "test"})
    [request] = retrain_sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests
    assert request.job_name == "full_retrain" and "pretrain" in request.tags[REASON]


def test_drift_past_the_threshold_calls_for_pretraining(retrained_home):
    home = retrained_home
    known = json.loads((home / "tokenizer" / KNOWN_ACTIVITIES).read_text())
    (home / "tokenizer" / KNOWN_ACTIVITIES).write_text(json.dumps(known[: len(known) // 2]))  # half now unseen
    sessionbert = SessionBertResource(home=str(home), source="synthetic", profile="tiny", seed=0)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(sessionbert, instance, {TRIGGER: "new_data", REASON: "test"})
    drift = json.loads((home / "vocabulary_drift.json").read_text())
    assert drift["drift"] > 0.01 and drift["needs_pretraining"] is True
    [request] = retrain_sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests
    assert request.job_name == "full_retrain"


def test_a_run_not_started_by_new_data_retrains_nothing(retrained_home):
    sessionbert = SessionBertResource(home=str(retrained_home), source="synthetic", profile="tiny", seed=0)
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(sessionbert, instance, {})
    result = retrain_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert not result.run_requests and "not by new data" in result.skip_message


@pytest.mark.parametrize(("extra", "follows"), [("", {"vocabulary_drift"}),
                                               ("u1,s9,not a time,compute,x\n" * 40, set())])
def test_a_failed_blocking_check_holds_what_follows_back(landing, tmp_path, extra, follows):
    # 40 users over a week (every split needs some; the drift reads 7 days), and extra: 40 rows of 600
    # quarantined, over the 5% limit
    week = "".join(ROWS.replace("u1,", f"u{i},").replace("2026-03-02", f"2026-03-0{2 + day}")
                   for i in range(40) for day in range(7))
    folder = landing({"events-a.csv": HEADER + week + extra})
    sessionbert = SessionBertResource(home=str(tmp_path / "home"), source=str(folder), profile="tiny")
    defs, instance = build_definitions(sessionbert), dg.DagsterInstance.ephemeral()
    _, before = _follow(defs, instance)
    # ingested by hand, up to quarantined_events and its quarantine-share check
    assert _execute(defs, sessionbert, instance, INGESTED) == [True, True, not extra]
    # the days' sessions follow their page views whatever the quarantine; the drift (so retraining) follows them
    # only after a passing quarantine share, and only a day whose whole window of 7 days is there
    requested, sessions = _follow(defs, instance, before.cursor)
    assert requested == {"session_splits"}
    assert len(sessions.get_requested_partitions(dg.AssetKey("session_splits"))) == 7
    assert defs.resolve_job_def(ingest_job.name).execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("session_splits")],
        tags={RANGE_START: "2026-03-02", RANGE_END: "2026-03-08"}).success
    requested, drift = _follow(defs, instance, sessions.cursor)
    assert requested == follows
    if follows:
        assert drift.get_requested_partitions(dg.AssetKey("vocabulary_drift")) == {"2026-03-08"}
