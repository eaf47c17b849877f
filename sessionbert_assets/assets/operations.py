"""The retraining policy's measure: how far today's traffic has drifted from the tokenizer's vocabulary."""


import json

import dagster as dg
import polars as pl
from transformers import AutoTokenizer

from sessionbert_assets.conditions import follows_new_data
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.model.tokenizer import KNOWN_ACTIVITIES
from sessionbert_core.model.tokenizer import vocabulary_drift as measure_drift


class DriftConfig(dg.Config):
    window_days: int = 7  # the recent traffic measured: the last days of data
    pretrain_above: float = 0.01  # drift (share of recent page views in unseen activities) that calls for pretraining


# after quarantined_events: a failed quarantine gate holds the drift back, so nothing retrains on a bad ingest
@dg.asset(group_name="model", kinds={"python", "json"}, deps=["tokenizer", "quarantined_events"],
          automation_condition=follows_new_data("tokenizer", "quarantined_events"))
def vocabulary_drift(context: dg.AssetExecutionContext, config: DriftConfig, sessionbert: SessionBertResource,
                     session_splits: pl.DataFrame) -> dict:
    """The share of the last days' page views in activities the current tokenizer was not trained on.

    The retraining policy reads it: new data always re-fine-tunes the model and refreshes personas
    and recommendations; it also retrains the tokenizer and repeats MLM pretraining when this drift
    is above `pretrain_above` (1% by default), or when there is no pretrained model yet, since an
    activity the tokenizer never saw has no embedding of its own to fine-tune.
    """
    home = sessionbert.home_path
    folder = home / "tokenizer"
    if not (folder / "tokenizer.json").exists() or not (home / "pretrained_model" / "config.json").exists():
        drift = measure_drift(session_splits, set(), config.window_days)  # every activity unseen
        needs_pretraining, reason = True, "no tokenizer or pretrained model yet: pretrain"
    else:
        known_file = folder / KNOWN_ACTIVITIES
        if known_file.exists():
            known = set(json.loads(known_file.read_text()))
        else:  # a tokenizer saved before the list was kept: what it holds as one token
            known = set(AutoTokenizer.from_pretrained(folder).get_vocab())
        drift = measure_drift(session_splits, known, config.window_days)
        needs_pretraining = drift["drift"] > config.pretrain_above
        reason = (f"vocabulary drift {drift['drift']:.2%} {'>' if needs_pretraining else '<='} "
                  f"{config.pretrain_above:.2%}: "
                  + ("retrain the tokenizer and pretrain" if needs_pretraining else "re-fine-tune only"))
    context.add_output_metadata({
        "drift": round(drift["drift"], 6),
        "pretrain_above": config.pretrain_above,
        "needs_pretraining": needs_pretraining,
        "decision": reason,
        "window_sessions": drift["window_sessions"],
        "unseen_activities": drift["unseen_activities"],
        "top_unseen": dg.MetadataValue.md("\n".join(f"- `{a}`" for a in drift["top_unseen"]) or "none"),
    })
    return drift | {"pretrain_above": config.pretrain_above, "needs_pretraining": needs_pretraining,
                    "decision": reason}
