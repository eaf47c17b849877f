"""Sessions serialized as text and split into train, validation and test, day by day."""

from datetime import date

import dagster as dg
import polars as pl

from sessionbert_assets.conditions import follows_new_data
from sessionbert_assets.metadata import count, date_range, streamed, table
from sessionbert_assets.partitions import SESSION_DAYS
from sessionbert_assets.resources import SessionBertResource
from sessionbert_assets.spark import SparkResource, spark_sessions
from sessionbert_core import storage
from sessionbert_core.data.serialize import split_days, split_figures, split_problem

ENGINES = ("polars", "spark")


# the billing a day's sessions may read: the month so far up to the day before (at most 31 days back)
BILLING_KNOWN = dg.TimeWindowPartitionMapping(start_offset=-31, end_offset=-1)


@dg.asset(group_name="data", kinds={"polars", "spark", "parquet"}, partitions_def=SESSION_DAYS,
          backfill_policy=dg.BackfillPolicy.single_run(),
          deps=["raw_sessions", dg.AssetDep("billing_records", partition_mapping=BILLING_KNOWN)],
          automation_condition=follows_new_data(needs=("raw_sessions",)))
def session_splits(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, spark: SparkResource,
                   spark_pipes: dg.PipesSubprocessClient) -> dg.Output[storage.Parts]:
    """One row per session of the day: its context sections and activities as text, and its split.

    Context holds only what was known when the session began (earlier page views of the day, billing
    up to the day before: the 31 days of `billing_records` before it, a Dagster window). Splits follow the
    paper's 5.9 : 1.9 : 1.1 by a keyed hash of the user, so they are deterministic and hold whole users
    whatever the day. `polars` (the default) serializes each day alone, so memory holds one day and a new
    day costs that day; `SESSIONBERT_ENGINE=spark` runs the same rules on the run's days as a Spark job
    launched through Dagster Pipes (`sessionbert_external/spark_sessions.py`), which writes the same rows.
    """
    if sessionbert.engine not in ENGINES:
        raise dg.Failure(description=f"SESSIONBERT_ENGINE must be one of {', '.join(ENGINES)}, "
                                     f"not {sessionbert.engine!r}")
    home, reported = sessionbert.home_path, {}
    target, days = home / "session_splits.parquet", [date.fromisoformat(key) for key in context.partition_keys]
    if sessionbert.engine == "spark":
        sessions, reported = spark_sessions(context, spark, spark_pipes, home, sessionbert.seed, days)
        written = [storage.Parts(storage.write_day(of_day, target, day), of_day.height)
                   for day in days for of_day in [sessions.filter(pl.col("day") == day)]]
    else:
        written = split_days(home / "raw_sessions.parquet", home / "billing_records.parquet", target, days,
                             sessionbert.seed)
    run_days = pl.scan_parquet(storage.day_paths(target, days))
    for day, figures in _per_day(run_days).items():
        context.add_asset_metadata(figures, partition_key=day)
    if problem := split_problem(storage.scan_table(target)):
        raise dg.Failure(description=problem)
    parts = storage.Parts(target, sum(p.rows for p in written))
    return dg.Output(parts, metadata=_sessions_metadata(run_days, len(days),
                                                        reported.get("engine", f"polars {pl.__version__}")))


def _per_day(sessions: pl.LazyFrame) -> dict[str, dict]:
    """Each day's sessions, users and splits, as that day partition's metadata."""
    figures = sessions.group_by("day").agg(sessions=pl.len(), users=pl.col("user_id").n_unique(),
                                           train=(pl.col("split") == "train").sum()).collect()
    return {row["day"].isoformat(): {"day_sessions": count(row["sessions"]), "day_users": count(row["users"]),
                                     "day_train_sessions": count(row["train"])}
            for row in figures.iter_rows(named=True)}


def _sessions_metadata(sessions: pl.LazyFrame, days: int, engine: str) -> dict:
    """Counts per split and words per session of the run's days, read as a stream."""
    words = sessions.select(pl.col("text").str.count_matches(" ") + 1).collect(engine="streaming").to_series()
    example = sessions.select("text").head(1).collect()["text"]
    return {
        "days": days,
        "sessions": count(streamed(sessions, pl.len())),
        "users": count(streamed(sessions, pl.col("user_id").n_unique())),
        "date_range": date_range(sessions, "day"),
        "splits": table(split_figures(sessions)),
        "mean_words_per_session": round(float(words.mean() or 0), 2),
        "p95_words_per_session": int(words.quantile(0.95) or 0),
        "sessions_with_context": int(streamed(sessions, (pl.col("context") != "").sum())),
        "example": dg.MetadataValue.text(example[0] if example.len() else ""),
        "engine": engine,
    }
