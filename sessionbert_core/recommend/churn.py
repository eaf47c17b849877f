"""Recommendation churn between two tables: whose top 5 changed, by how many services, and whether the
user's own activity or the model moved it.

A user's list should change when they did something new (a new session, a service adopted); a list
that changes while the user did nothing is the model's doing, and much of it makes recommendations
look arbitrary. The top 5 is compared as a set of services: a reordering within it is no churn.
Attribution reads a per-user history fingerprint of each table's run (`history_fingerprint`): a
changed user whose fingerprint differs is `activity`, one whose fingerprint is the same is `model`;
without fingerprints every changed user is `unattributed`.
"""

from __future__ import annotations

import polars as pl

TOP = 5
CAUSES = ("activity", "model", "unattributed")


def history_fingerprint(sessions: pl.DataFrame) -> pl.DataFrame:
    """`user_id, n_sessions, last_session`: what a user's history was when a table was made.

    `sessions` is that run's `session_splits` (user_id, session_id, start); two runs agree on a user
    only if no session of theirs was added or dropped at the end between them.
    """
    return (sessions.sort("user_id", "start", "session_id")
            .group_by("user_id", maintain_order=True)
            .agg(n_sessions=pl.len(), last_session=pl.col("session_id").last()))


def recommendation_churn(previous_table: pl.DataFrame, new_table: pl.DataFrame,
                         previous_history: pl.DataFrame | None = None, new_history: pl.DataFrame | None = None,
                         top: int = TOP) -> tuple[dict, pl.DataFrame]:
    """Churn of the top `top` services between two recommendation tables (`user_id, rank, service, ...`).

    Over users in both tables: `churn` is the share whose set of top services changed, `model_churn`
    the share changed with an unchanged history. A user's `services_changed` is the larger of the
    services that entered and that left (0..top; lists of unequal length count their longer side).
    Histories are frames of `user_id` plus the same fingerprint columns (`history_fingerprint`'s);
    a user missing from either counts as changed history. Users in one table only are `added`
    or `removed`. Returns the figures and a frame `services_changed, users, share, activity, model,
    unattributed`, one row per count 0..top.
    """
    if (previous_history is None) != (new_history is None):
        raise ValueError("give both histories (to attribute churn) or neither")
    before, after = _top_services(previous_table, top), _top_services(new_table, top)
    both = before.join(after, on="user_id", suffix="_new").with_columns(services_changed=pl.max_horizontal(
        pl.col("services_new").list.set_difference("services").list.len(),
        pl.col("services").list.set_difference("services_new").list.len()))
    both = both.with_columns(cause=_cause(both, previous_history, new_history)).with_columns(
        cause=pl.when(pl.col("services_changed") > 0).then(pl.col("cause")))
    histogram = _histogram(both, top)
    compared, changed = both.height, int((both["services_changed"] > 0).sum())
    by_cause = {cause: int(histogram[cause].sum()) for cause in CAUSES}
    figures = {
        "n_users_compared": compared,
        "n_changed": changed,
        "churn": changed / compared if compared else None,
        "model_churn": by_cause["model"] / compared if compared else None,
        "by_cause": by_cause,
        "histogram": dict(zip(histogram["services_changed"].to_list(), histogram["users"].to_list(), strict=True)),
        "n_added": after.join(before, on="user_id", how="anti").height,
        "n_removed": before.join(after, on="user_id", how="anti").height,
    }
    return figures, histogram


def _top_services(table: pl.DataFrame, top: int) -> pl.DataFrame:
    """`user_id, services`: each user's top services, as a sorted list."""
    missing = {"user_id", "rank", "service"} - set(table.columns)
    if missing:
        raise ValueError(f"a recommendation table needs `user_id, rank, service`; missing {sorted(missing)}")
    return (table.filter(pl.col("rank") <= top).group_by("user_id")
            .agg(services=pl.col("service").unique().sort()))


def _cause(both: pl.DataFrame, previous: pl.DataFrame | None, new: pl.DataFrame | None) -> pl.Series:
    """Per row of `both`: `activity` where the user's fingerprint differs between the histories, else `model`."""
    if previous is None or new is None:
        return pl.repeat("unattributed", both.height, eager=True)
    columns = [c for c in previous.columns if c != "user_id"]
    if "user_id" not in previous.columns or sorted(columns) != sorted(c for c in new.columns if c != "user_id"):
        raise ValueError(f"histories need `user_id` and the same fingerprint columns, not {previous.columns} "
                         f"and {new.columns}")
    joined = (both.select("user_id")
              .join(previous.with_columns(present=True), on="user_id", how="left", maintain_order="left")
              .join(new.with_columns(present=True), on="user_id", how="left", maintain_order="left",
                    suffix="_new"))
    moved = pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in [*columns, "present"]]
                              + [pl.col("present").is_null()])
    return joined.select(cause=pl.when(moved).then(pl.lit("activity")).otherwise(pl.lit("model")))["cause"]


def _histogram(both: pl.DataFrame, top: int) -> pl.DataFrame:
    counts = both.group_by("services_changed").agg(
        users=pl.len(), **{cause: (pl.col("cause") == cause).sum() for cause in CAUSES})
    frame = (pl.DataFrame({"services_changed": list(range(top + 1))}, schema={"services_changed": pl.UInt32})
             .join(counts.with_columns(pl.col("services_changed").cast(pl.UInt32)), on="services_changed",
                   how="left")
             .with_columns(pl.exclude("services_changed").fill_null(0).cast(pl.Int64)))
    total = both.height
    return frame.with_columns(share=pl.col("users") / total if total else pl.lit(None, dtype=pl.Float64)).select(
        "services_changed", "users", "share", *CAUSES)
