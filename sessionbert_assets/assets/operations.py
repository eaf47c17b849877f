"""The retraining policy's measure: how far today's traffic has drifted from the tokenizer's vocabulary."""


import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from transformers import AutoTokenizer

from sessionbert_assets.conditions import follows_new_data
from sessionbert_assets.partitions import SESSION_DAYS
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core import storage
from sessionbert_core.model.tokenizer import KNOWN_ACTIVITIES
from sessionbert_core.model.tokenizer import vocabulary_drift as measure_drift


class DriftConfig(dg.Config):
    pretrain_above: float = 0.01  # drift (share of recent page views in unseen activities) that calls for pretraining


# the traffic a day's drift measures: that day and the six before it, a Dagster window of `session_splits`
WINDOW_DAYS = 7
DRIFT_WINDOW = dg.TimeWindowPartitionMapping(start_offset=1 - WINDOW_DAYS)


# after quarantined_events: a failed quarantine gate holds the drift back, so nothing retrains on a bad ingest
@dg.asset(group_name="model", kinds={"python", "json"}, partitions_def=SESSION_DAYS,
          backfill_policy=dg.BackfillPolicy.single_run(),
          deps=["tokenizer", "quarantined_events", dg.AssetDep("session_splits", partition_mapping=DRIFT_WINDOW)],
          automation_condition=follows_new_data("tokenizer", "quarantined_events", needs=("session_splits",)))
def vocabulary_drift(context: dg.AssetExecutionContext, config: DriftConfig, sessionbert: SessionBertResource
                     ) -> dict:
    """One partition a day: the share of the page views of that day and the six before it (the window of
    `session_splits` this day reads) in activities the current tokenizer was not trained on.

    The retraining policy reads the day just measured: new data always re-fine-tunes the model and
    refreshes personas and recommendations; it also retrains the tokenizer and repeats MLM pretraining
    when this drift is above `pretrain_above` (1% by default), or when there is no pretrained model yet,
    since an activity the tokenizer never saw has no embedding of its own to fine-tune.
    """
    known = known_activities(sessionbert.home_path)
    splits = sessionbert.home_path / "session_splits.parquet"
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        window = storage.day_paths(splits, [day - timedelta(days=back) for back in range(WINDOW_DAYS)])
        sessions = storage.scan_table(window, {"day": pl.Date, "activities": pl.List(pl.String)}).select(
            "day", "activities").collect()
        drift = decided(measure_drift(sessions, known or set(), WINDOW_DAYS), known is not None, config.pretrain_above)
        context.add_asset_metadata({
            "drift": round(drift["drift"], 6), "pretrain_above": config.pretrain_above,
            "needs_pretraining": drift["needs_pretraining"], "decision": drift["decision"],
            "window_sessions": drift["window_sessions"], "unseen_activities": drift["unseen_activities"],
            "top_unseen": dg.MetadataValue.md("\n".join(f"- `{a}`" for a in drift["top_unseen"]) or "none"),
        }, partition_key=key)
    return drift  # vocabulary_drift.json: the last day measured


def known_activities(home: Path) -> set[str] | None:
    """The activities the tokenizer was trained on; None before a tokenizer and a pretrained model exist."""
    folder = home / "tokenizer"
    if not (folder / "tokenizer.json").exists() or not (home / "pretrained_model" / "config.json").exists():
        return None
    known_file = folder / KNOWN_ACTIVITIES
    if known_file.exists():
        return set(json.loads(known_file.read_text()))
    return set(AutoTokenizer.from_pretrained(folder).get_vocab())  # saved before the list was kept: its tokens


def decided(drift: dict, trained: bool, pretrain_above: float) -> dict:
    """The drift with the policy's decision: pretrain when nothing is trained yet or past `pretrain_above`."""
    if not trained:
        needs, reason = True, "no tokenizer or pretrained model yet: pretrain"
    else:
        needs = drift["drift"] > pretrain_above
        reason = (f"vocabulary drift {drift['drift']:.2%} {'>' if needs else '<='} {pretrain_above:.2%}: "
                  + ("retrain the tokenizer and pretrain" if needs else "re-fine-tune only"))
    return drift | {"pretrain_above": pretrain_above, "needs_pretraining": needs, "decision": reason}
