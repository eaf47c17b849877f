"""Sessions serialized as text and split into train, validation and test."""


import dagster as dg
import polars as pl

from sessionbert_assets.metadata import count, date_range, table
from sessionbert_assets.resources import SessionBertResource
from sessionbert_assets.spark import SparkResource, spark_sessions
from sessionbert_core.data.serialize import serialize_sessions, split_problem, split_sessions

ENGINES = ("polars", "spark")


@dg.asset(group_name="data", kinds={"polars", "spark", "parquet"})
def session_splits(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, spark: SparkResource,
                   spark_pipes: dg.PipesSubprocessClient, raw_sessions: pl.LazyFrame,
                   billing_records: pl.LazyFrame) -> dg.Output[pl.DataFrame]:
    """One row per session: its context sections and activities as text, and its split.

    Context holds only what was known when the session began (earlier page views of the day,
    billing up to the day before). Splits follow the paper's 5.9 : 1.9 : 1.1 by a keyed hash of the
    user, so they are deterministic and hold whole users. `SESSIONBERT_ENGINE=spark` runs the same rules
    as a Spark job launched through Dagster Pipes (`sessionbert_external/spark_sessions.py`), which
    writes the same rows; `polars` (the default) runs them here.
    """
    if sessionbert.engine not in ENGINES:
        raise dg.Failure(description=f"SESSIONBERT_ENGINE must be one of {', '.join(ENGINES)}, "
                                     f"not {sessionbert.engine!r}")
    reported = {}
    if sessionbert.engine == "spark":
        sessions, reported = spark_sessions(context, spark, spark_pipes, sessionbert.home_path, sessionbert.seed)
    else:
        sessions = split_sessions(serialize_sessions(raw_sessions.collect(), billing_records.collect()),
                                  seed=sessionbert.seed)
    if problem := split_problem(sessions):
        raise dg.Failure(description=problem)
    per_split = (
        sessions.group_by("split").agg(sessions=pl.len().cast(pl.Int64), users=pl.col("user_id").n_unique()
                                       .cast(pl.Int64), mean_activities=pl.col("n_activities").mean().round(2))
        .sort("split").with_columns(pl.col("split").cast(pl.String))
    )
    words = sessions["text"].str.count_matches(" ") + 1
    return dg.Output(sessions, metadata={
        "sessions": count(sessions.height),
        "users": count(sessions["user_id"].n_unique()),
        "date_range": date_range(sessions, "day"),
        "splits": table(per_split),
        "mean_words_per_session": round(float(words.mean() or 0), 2),
        "p95_words_per_session": int(words.quantile(0.95) or 0),
        "sessions_with_context": int((sessions["context"] != "").sum()),
        "example": dg.MetadataValue.text(sessions["text"][0] if sessions.height else ""),
        "engine": reported.get("engine", f"polars {pl.__version__}"),
    })
