"""Model inputs: sessions ending in a [MASK] slot where the next activity goes."""

from __future__ import annotations

import polars as pl

from sessionbert_core.activity import service_of_expr
from sessionbert_core.data.serialize import session_text

MASK = "[MASK]"  # the slot where the next activity goes (the tokenizer's mask token)


def next_activity_inputs(sessions: pl.DataFrame, every_cut: bool = False) -> pl.DataFrame:
    """Sessions of two or more activities as model input: context, the prefix, then a [MASK] slot.

    The target is the last activity (the evaluation protocol) or, with `every_cut`, each activity
    after the first in turn, its prefix being everything before it (more training examples from
    the same sessions; the prefix never holds the target or anything after it).
    """
    eligible = sessions.filter(pl.col("n_activities") >= 2)
    if every_cut:
        cuts = eligible.with_columns(cut=pl.int_ranges(1, pl.col("n_activities"))).explode("cut")
    else:
        cuts = eligible.with_columns(cut=pl.col("n_activities").cast(pl.Int64) - 1)
    return (
        cuts.with_columns(prefix=pl.col("activities").list.slice(0, pl.col("cut")),
                          target_page=pl.col("activities").list.get(pl.col("cut")))
        .with_columns(input_text=session_text(pl.col("context"), pl.col("prefix").list.concat(pl.lit([MASK]))),
                      previous=pl.col("prefix").list.last(),
                      target_service=service_of_expr(pl.col("target_page")))
        .drop("cut")
    )


def recommendation_inputs(sessions: pl.DataFrame) -> pl.DataFrame:
    """Whole sessions followed by a [MASK] slot: the model's guess at what the user does next."""
    return sessions.with_columns(input_text=session_text(pl.col("context"),
                                                         pl.col("activities").list.concat(pl.lit([MASK]))))
