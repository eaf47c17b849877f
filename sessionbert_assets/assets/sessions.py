"""Sessions serialized as text and split into train, validation and test."""


import dagster as dg
import polars as pl

from sessionbert_assets.conditions import follows_new_data
from sessionbert_assets.metadata import count, date_range, streamed, table
from sessionbert_assets.resources import SessionBertResource
from sessionbert_assets.spark import SparkResource, spark_sessions
from sessionbert_core import storage
from sessionbert_core.data.serialize import split_figures, split_in_parts, split_problem

ENGINES = ("polars", "spark")


@dg.asset(group_name="data", kinds={"polars", "spark", "parquet"}, automation_condition=follows_new_data())
def session_splits(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, spark: SparkResource,
                   spark_pipes: dg.PipesSubprocessClient, raw_sessions: pl.LazyFrame,
                   billing_records: pl.LazyFrame) -> dg.Output[storage.Parts]:
    """One row per session: its context sections and activities as text, and its split.

    Context holds only what was known when the session began (earlier page views of the day,
    billing up to the day before). Splits follow the paper's 5.9 : 1.9 : 1.1 by a keyed hash of the
    user, so they are deterministic and hold whole users. `polars` (the default) serializes each part of
    `raw_sessions` (a range of users) alone, so memory holds one part; `SESSIONBERT_ENGINE=spark` runs the
    same rules as a Spark job launched through Dagster Pipes (`sessionbert_external/spark_sessions.py`),
    which writes the same rows.
    """
    if sessionbert.engine not in ENGINES:
        raise dg.Failure(description=f"SESSIONBERT_ENGINE must be one of {', '.join(ENGINES)}, "
                                     f"not {sessionbert.engine!r}")
    home, reported = sessionbert.home_path, {}
    target = home / "session_splits.parquet"
    if sessionbert.engine == "spark":
        sessions, reported = spark_sessions(context, spark, spark_pipes, home, sessionbert.seed)
        writer = storage.PartsWriter(target)
        writer.write(sessions)
        parts = writer.commit()
    else:
        parts = split_in_parts(home / "raw_sessions.parquet", home / "billing_records.parquet", target,
                               sessionbert.seed)
    if problem := split_problem(storage.scan_table(parts.folder)):
        raise dg.Failure(description=problem)
    return dg.Output(parts, metadata=_sessions_metadata(parts, reported.get("engine", f"polars {pl.__version__}")))


def _sessions_metadata(parts: storage.Parts, engine: str) -> dict:
    """Counts per split and words per session, read as a stream over the parts."""
    sessions = storage.scan_table(parts.folder)
    words = sessions.select(pl.col("text").str.count_matches(" ") + 1).collect(engine="streaming").to_series()
    example = sessions.select("text").head(1).collect()["text"]
    return {
        "sessions": count(parts.rows),
        "users": count(streamed(sessions, pl.col("user_id").n_unique())),
        "date_range": date_range(sessions, "day"),
        "splits": table(split_figures(sessions)),
        "mean_words_per_session": round(float(words.mean() or 0), 2),
        "p95_words_per_session": int(words.quantile(0.95) or 0),
        "sessions_with_context": int(streamed(sessions, (pl.col("context") != "").sum())),
        "example": dg.MetadataValue.text(example[0] if example.len() else ""),
        "engine": engine,
    }
