"""Declarative automation: the conditions under which ingestion follows new landing files by itself.

The new-data sensor registers a new file as a `landing_files` partition and requests that partition
alone (`read_new_files`); the new-days sensor then runs `ingest_days` over the days that file holds (the
days' tables, the drift, and the quarantine with its check, in one run). What is built from the days also
follows its parents by itself (`follows_new_data`), for days written some other way (by hand, a backfill):
a day (or an unpartitioned asset) is requested once a parent of it has new data and no parent failed a
blocking check, with none of them in progress, whatever day it is (not only the latest: a late day
refreshes its own). `ingestion_automation` in `automation` evaluates these conditions and tags its runs as
new data, so the retraining policy (`retrain_sensor`) reads the drift they measure. Training is not here:
how much to retrain is the drift's decision.
"""

import dagster as dg

# every run a sensor, a schedule or automation starts carries these: what started it and why
TRIGGER, REASON = "sessionbert/trigger", "sessionbert/reason"
# the assets that follow their parents by themselves: the quarantine over every day, a day's sessions, its drift
FOLLOWERS = ("quarantined_events", "session_splits", "vocabulary_drift")


# a parent (any of its partitions) whose latest materialization failed a blocking check holds its children back;
# a check still to run in the same run as its asset stops that run's children itself
NO_PARENT_CHECK_FAILED = ~dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
).with_label("no parent failed a blocking check")


def follows_new_data(*not_a_trigger: str, needs: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """Dagster's eager condition on any day: requested once a parent it reads has new data, with no parent in
    progress and none failing a blocking check.

    Unlike `eager()`, it acts on every day, not the latest only, and waits only for the parents in `needs` to
    exist (days before the data began are missing for good, and must not hold back an unpartitioned child
    that reads every day). `not_a_trigger` are parents whose updates start nothing, though their checks still
    hold it back: `landing_folder` (refreshed alone before every full run), `tokenizer` (retraining refreshes
    it; the drift then is measured by the next data) and `quarantined_events` for the drift (the drift follows
    the days' sessions: a parent of another partitioning is run beside it, not before it, so it must not
    start the drift in the same tick)."""
    A = dg.AutomationCondition
    updated = A.any_deps_updated()
    if not_a_trigger:
        updated = updated.ignore(dg.AssetSelection.assets(*not_a_trigger))
    condition = ((A.newly_missing() | updated).since_last_handled() & ~A.any_deps_in_progress() & ~A.in_progress()
                 & NO_PARENT_CHECK_FAILED)
    if needs:
        condition &= ~A.any_deps_match(A.missing()).allow(dg.AssetSelection.assets(*needs))
    return condition.with_label("follows new data")
