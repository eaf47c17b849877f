"""When things run: the jobs, the schedules and the sensors of the retraining policy.

- New data (`new_data_sensor`, on): a settled new or changed file in the landing folder becomes a
  `landing_files` partition, and `read_new_files` reads that partition alone.
- New days (`new_days_sensor`, on): once a file is read, its parse says which days it holds, and
  `ingest_days` computes those days of `raw_sessions`, `billing_records`, `session_splits` and
  `vocabulary_drift` (the page views of the day and the six before it: a `TimeWindowPartitionMapping`
  of `session_splits`), and the quarantine over every day with its blocking check, in one run tagged as
  new data, and only those days.
- Declarative automation (`ingestion_automation`, on) keeps the rest in step when a parent changes some
  other way (days materialized by hand, a backfill): each day of `session_splits` and `vocabulary_drift`,
  and `quarantined_events`, follows its parents once they have new data and no parent failed a blocking
  check (`conditions.follows_new_data`).
- Then `retrain_sensor` (on) reads the drift: at most 1% of recent page views in activities the
  tokenizer never saw starts `finetune_and_refresh` (re-fine-tune from the current pretrained model,
  evaluate, refresh personas and recommendations); above it, or with no pretrained model yet,
  `full_retrain` (tokenizer and MLM pretraining too).
- Every day at 05:00 UTC (`daily_recommendations`, on): personas and recommendations from the
  current models, with no training.
- Sundays at 03:00 UTC (`weekly_retrain`, off): `full_retrain` over the days ingested, for those who want
  pretraining on a calendar as well.

Every run these start carries `sessionbert/trigger` and `sessionbert/reason` tags, and each asset it
materializes shows them as `refreshed_because` metadata. `ingest_days` is the same ingestion of days as one
job, for a backfill of a range of days launched by hand.
"""

import dagster as dg

from sessionbert_assets.conditions import FOLLOWERS, REASON, TRIGGER
from sessionbert_assets.partitions import DAY_ASSETS, LANDING_FILES, day_tags, range_tags, registered
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.data.ingest import IngestError, cached_days, cached_files
from sessionbert_core.data.landing_watch import look

DAYS = dg.AssetSelection.assets(*DAY_ASSETS)

main_job = dg.define_asset_job(
    "sessionbert_main",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("landing_files"),
    description="The asset graph from the files' parses on, over a range of days, on the configured source and "
                "profile (`make run` reads the files with `read_new_files` first, then runs this over their days).",
)
files_job = dg.define_asset_job(
    "read_new_files",
    selection=dg.AssetSelection.assets("landing_folder", "landing_files"),
    description="The new files' landing_files partitions, each file read and validated alone (what the new-data "
                "sensor starts; the ingestion after it follows by declarative automation).",
)
ingest_job = dg.define_asset_job(
    "ingest_days",
    selection=DAYS | dg.AssetSelection.assets("quarantined_events"),
    description="Days of data in (read by read_new_files first): those days of raw_sessions, billing_records, "
                "session_splits and the vocabulary drift that decides how much to retrain (each day alone), and the "
                "quarantine over every day. Launch it over a range of days for a backfill.",
)
finetune_job = dg.define_asset_job(
    "finetune_and_refresh",
    selection=dg.AssetSelection.assets("finetuned_model", "next_activity_baselines", "next_activity_peers",
                                       "session_embeddings").downstream(),
    description="Re-fine-tune from the current pretrained model and tokenizer, evaluate (quality gates), "
                "refresh personas and recommendations.",
)
full_retrain_job = dg.define_asset_job(
    "full_retrain",
    selection=(dg.AssetSelection.assets("tokenizer", "next_activity_baselines", "next_activity_peers").downstream()
               - dg.AssetSelection.assets("vocabulary_drift")),
    description="Retrain the tokenizer, repeat MLM pretraining, fine-tune, evaluate and refresh everything after.",
)
refresh_job = dg.define_asset_job(
    "refresh_recommendations",
    selection=dg.AssetSelection.assets("session_embeddings", "user_personas", "ranker_selection",
                                       "recommendation_table", "serving_model"),
    description="The days ingested so far through the current models: embeddings, user personas, the ranker "
                "chosen on validation users and the recommendation table (no training; new days arrive by the "
                "sensors).",
)

# on by default: cheap (about a minute on `small`) and what keeps the product's table fresh
daily_refresh = dg.ScheduleDefinition(
    name="daily_recommendations", job=refresh_job, cron_schedule="0 5 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING, tags={TRIGGER: "schedule", REASON: "daily refresh at 05:00 UTC"},
    description="Every day at 05:00 UTC: user personas and recommendations from the current models.")
# off by default: new data already retrains through the sensors, and this repeats pretraining
# (11 minutes on 2 cores for `small`, hours on a GPU at paper scale) whether or not anything changed
weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain", job=full_retrain_job, cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED, tags={TRIGGER: "schedule", REASON: "weekly full retrain, "
                                                                                         "Sundays 03:00 UTC"},
    description="Sundays at 03:00 UTC: the tokenizer, pretraining, fine-tuning and everything after, over the days "
                "ingested.")


@dg.sensor(job=files_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the landing folder; new or changed files, once no longer being written, become "
                       "landing_files partitions read by `read_new_files` (one run per file set). Files ingestion "
                       "would refuse are reported.")
def new_data_sensor(context: dg.SensorEvaluationContext, sessionbert: SessionBertResource) -> dg.SensorResult:
    folder = sessionbert.landing_path()
    if not folder.is_dir():
        return dg.SensorResult(skip_reason=f"{folder} does not exist yet" + (
            ": materialize landing_folder to generate the synthetic world" if sessionbert.is_synthetic else ""))
    try:
        seen = look(folder, context.cursor, sessionbert.pseudonym_key(),
                    cached_files(sessionbert.home_path / "ingest_cache"))
    except IngestError as error:  # a landing.yaml that cannot be read: said on every tick until it is mended
        return dg.SensorResult(skip_reason=f"the landing folder cannot be read: {error}", cursor=context.cursor)
    for problem in seen.rejected.values():
        context.log.warning(f"not ingested: {problem}")
    notes = []
    if seen.rejected:
        notes.append(f"refused {len(seen.rejected)}: " + "; ".join(seen.rejected.values()))
    if seen.waiting:
        notes.append(f"waiting for {len(seen.waiting)} file(s) still being written or seen once: "
                     + _names(seen.waiting))
    if not seen.new:
        return dg.SensorResult(skip_reason="no new settled file" + (f" ({'; '.join(notes)})" if notes else ""),
                               cursor=seen.cursor)
    reason = f"{len(seen.new)} new file(s): {_names(sorted(seen.new))}"
    if seen.rejected:
        reason += f"; refused: {_names(sorted(seen.rejected))}"
    # the new files become landing_files partitions (the ones gone are forgotten), and one run reads them
    known = registered(context.instance)
    added = [name for name in sorted(seen.new) if name not in known]
    gone = [name for name in seen.removed if name in known]
    ordered = [name for name in known if name not in gone] + added
    request = dg.RunRequest(run_key=seen.run_key,  # unset unreadable_files: a refused file is quarantined
                            tags={TRIGGER: "new_data", REASON: reason, **range_tags(ordered, list(seen.new))})
    changes = [LANDING_FILES.build_add_request(added)] * bool(added)
    changes += [LANDING_FILES.build_delete_request(gone)] * bool(gone)
    return dg.SensorResult(run_requests=[request], cursor=seen.cursor, dynamic_partitions_requests=changes)


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="After files are read (landing_files), requests ingest_days over the days they hold: "
                       "those days of raw_sessions, billing_records, session_splits and vocabulary_drift, and the "
                       "quarantine over every day, in one run; only those days are computed again.")
def new_days_sensor(context: dg.SensorEvaluationContext, sessionbert: SessionBertResource):
    if context.cursor is None:  # its first tick: what was read before it ran (`make run`) is ingested already
        latest = context.instance.fetch_materializations(dg.AssetKey("landing_files"), limit=1)
        return dg.SensorResult(skip_reason="watching for files read from now on", cursor=latest.cursor or "")
    events = context.instance.fetch_materializations(dg.AssetKey("landing_files"), limit=1000, ascending=True,
                                                     cursor=context.cursor or None)
    records = events.records
    if not records:
        return dg.SkipReason("no file read since the last tick")
    files = sorted({r.partition_key for r in records if r.partition_key})
    days = cached_days(sessionbert.home_path / "ingest_cache", set(files))
    cursor = events.cursor
    if not days:
        return dg.SensorResult(skip_reason=f"{len(files)} file(s) read, no day of data in them", cursor=cursor)
    try:
        tags = day_tags(days)
    except ValueError as error:
        context.log.warning(str(error))
        return dg.SensorResult(skip_reason=str(error), cursor=cursor)
    reason = (f"{len(days)} day(s), {days[0].isoformat()} to {days[-1].isoformat()}, in {len(files)} file(s) read: "
              f"{_names(files)}")
    # tagged as new data: a file that cannot be read is quarantined (unreadable_files: auto), not fatal
    # the whole of ingest_days in one run: the drift after the quarantine's blocking check, never beside it
    request = dg.RunRequest(run_key=f"days-after-{records[-1].storage_id}",
                            tags={TRIGGER: "new_data", REASON: reason[:1000], **tags})
    return dg.SensorResult(run_requests=[request], cursor=cursor)


ingestion_automation = dg.AutomationConditionSensorDefinition(
    "ingestion_automation", target=dg.AssetSelection.assets(*FOLLOWERS), minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING, emit_backfills=False,
    run_tags={TRIGGER: "new_data", REASON: "new landing files read: ingestion follows (declarative automation)"},
    description="Ingestion after new files: combines them, cuts sessions and splits, measures the vocabulary drift "
                "(each asset eager on its parents' new data, once their blocking checks passed).")


@dg.asset_sensor(asset_key=dg.AssetKey("vocabulary_drift"), jobs=[finetune_job, full_retrain_job],
                 minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
                 description="After new data is ingested, reads the vocabulary drift and starts "
                             "`finetune_and_refresh` or, past the threshold, `full_retrain`.")
def retrain_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    run = context.instance.get_run_by_id(asset_event.run_id)
    if run is None or run.tags.get(TRIGGER) != "new_data":
        return dg.SkipReason(f"vocabulary_drift was refreshed by run {asset_event.run_id[:8]}, not by new data: "
                             "nothing to retrain")
    metadata = asset_event.asset_materialization.metadata
    job = full_retrain_job if metadata["needs_pretraining"].value else finetune_job
    reason = f"{metadata['decision'].value}; after {run.tags.get(REASON, 'new data')} (run {run.run_id[:8]})"
    return dg.RunRequest(run_key=f"retrain-after-{asset_event.run_id}", job_name=job.name,
                         tags={TRIGGER: "retrain", REASON: reason[:1000]})


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


jobs = [main_job, files_job, ingest_job, finetune_job, full_retrain_job, refresh_job]
schedules = [daily_refresh, weekly_retrain]
sensors = [new_data_sensor, new_days_sensor, ingestion_automation, retrain_sensor]
