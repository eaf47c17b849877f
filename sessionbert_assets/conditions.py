"""Declarative automation: the conditions under which ingestion follows new landing files by itself.

The new-data sensor registers a new file as a `landing_files` partition and requests that partition
alone (`read_new_files`). From there each ingestion asset follows its parents (`follows_new_data`):
it is requested once a parent has new data and no parent failed a blocking check, with none of them
missing or in progress. `ingestion_automation` in `automation` evaluates these conditions
and tags its runs as new data, so the retraining policy (`retrain_sensor`) reads the drift they
measure exactly as before. Training is not here: how much to retrain is the drift's decision.
"""

import dagster as dg

# every run a sensor, a schedule or automation starts carries these: what started it and why
TRIGGER, REASON = "sessionbert/trigger", "sessionbert/reason"
# the assets that follow a new file by themselves, in order: the files' combination, sessions, drift
FOLLOWERS = ("raw_sessions", "quarantined_events", "billing_records", "session_splits", "vocabulary_drift")


# a parent (any of its partitions) whose latest materialization failed a blocking check holds its children back;
# a check still to run in the same run as its asset stops that run's children itself
NO_PARENT_CHECK_FAILED = ~dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
).with_label("no parent failed a blocking check")


def follows_new_data(*not_a_trigger: str) -> dg.AutomationCondition:
    """Eager on new upstream data, unless a parent failed a blocking check.

    `not_a_trigger` are parents whose updates must start nothing: `landing_folder` (it is refreshed alone
    before every full run) and `tokenizer` (retraining refreshes it; the drift then is measured by the next
    data, not by the retraining itself)."""
    condition = (dg.AutomationCondition.eager() & NO_PARENT_CHECK_FAILED).with_label("follows new data")
    return condition.ignore(dg.AssetSelection.assets(*not_a_trigger)) if not_a_trigger else condition
