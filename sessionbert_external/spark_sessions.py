"""Sessions serialized and split on Spark, for data one machine cannot hold: the rules of
`sessionbert_core.data.serialize` (and, for page views without a session id, of
`access_log.sessions_by_gap`) as PySpark DataFrames, writing the same columns as the polars path.

Launched by Dagster Pipes (the `session_splits` asset with `SESSIONBERT_ENGINE=spark`):
`spark-submit sessionbert_external/spark_sessions.py` against a local master here, or the same file on
a cluster (docs/scaling.md). Paths and rules come in the Pipes extras; the counts go back as the asset's
metadata. Needs only `pyspark` and `dagster-pipes`, so it ships to a cluster alone.

- Sessionization: a page view with no session id starts a new session after 30 minutes without one of
  the same user (`lag` over `Window.partitionBy(user).orderBy(time)`, a running sum of the cuts); its id
  is the user and the session's start in epoch seconds, as in the polars path.
- Serialization: context is what was known when the session began (location and tier of the session,
  services and pages of the user's earlier page views that day, billing up to the day before), then the
  activities in time order.
- Splits: whole users, by the same keyed BLAKE2b draw as `serialize.split_sessions`.
- Days: the tables are kept a file a day; the job serializes the run's days (`days` in the extras).

Ties in time keep the order of the input file (a row number taken as it is read).
"""

from __future__ import annotations

import hashlib

from dagster_pipes import open_dagster_pipes
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

OUTPUT_COLUMNS = ("user_id", "session_id", "day", "start", "n_activities", "context", "activities", "text", "split")


def word(value: Column) -> Column:
    """serialize.word: whitespace (Unicode, as polars strips it) trimmed and joined by '_', brackets made '()'."""
    value = F.regexp_replace(value, r"(?U)^\s+|\s+$", "")
    value = F.regexp_replace(value, r"(?U)\s+", "_")
    return F.regexp_replace(F.regexp_replace(value, r"\[", "("), r"\]", ")")


def activity(service: Column, page: Column) -> Column:
    return F.concat(F.regexp_replace(word(service), ";", ":"), F.lit(";"), F.regexp_replace(word(page), ";", ":"))


def sessions_by_gap(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Page views with no session id cut into sessions by the gap; the others keep theirs."""
    missing = F.col("session_id").isNull() | (F.col("session_id") == "")
    by_time = Window.partitionBy("user_id").orderBy("timestamp", "_order")
    gap = F.unix_micros("timestamp") - F.lag(F.unix_micros("timestamp")).over(by_time)
    cut = events.where(missing).withColumn("_cut", (gap.isNull() | (gap > gap_minutes * 60_000_000)).cast("long"))
    cut = cut.withColumn("_session", F.sum("_cut").over(by_time.rowsBetween(Window.unboundedPreceding, 0)))
    start = F.min("timestamp").over(Window.partitionBy("user_id", "_session"))
    cut = cut.withColumn("session_id", F.concat_ws("-", "user_id", F.unix_seconds(start).cast("string")))
    return cut.drop("_cut", "_session").unionByName(events.where(~missing))


def serialized(events: DataFrame, billing: DataFrame, rules: dict) -> DataFrame:
    events = events.withColumn("activity", activity(F.col("service"), F.col("page"))).withColumn(
        "day", F.to_date("timestamp"))
    by_time = F.struct("timestamp", "_order", "activity")
    first_known = {c: F.min_by(c, F.when(F.col(c).isNotNull(), F.col("_order"))).alias(c)
                   for c in ("country", "city", "billing_tier")}
    sessions = events.groupBy("user_id", "session_id").agg(
        F.min("timestamp").alias("start"),
        F.transform(F.array_sort(F.collect_list(by_time)), lambda e: e.getField("activity")).alias("activities"),
        *first_known.values(),
    ).withColumn("day", F.to_date("start"))
    sessions = (sessions.join(_earlier_same_day(events, sessions, rules), ["user_id", "session_id"], "left")
                .join(_billed_before(sessions, billing, rules["top_billed"]), ["user_id", "day"], "left"))
    sections = [
        _section("[location_token]", F.array(word(F.col("country")), word(F.col("city")))),
        _section("[billing_token]", F.array(word(F.col("billing_tier")))),
        _section("[daily_service_token]", F.col("daily_services")),
        _section("[daily_page_token]", F.col("daily_pages")),
        _section("[daily_billed_token]", F.col("daily_billed")),
        _section("[monthly_billed_token]", F.col("monthly_billed")),
    ]
    body = F.concat(F.lit("[activity] "), F.array_join("activities", " [SEP] "))
    return (sessions.withColumn("context", F.concat_ws(" ", *sections))
            .withColumn("text", F.when(F.col("context") == "", body).otherwise(F.concat_ws(" ", "context", body)))
            .withColumn("n_activities", F.size("activities")))


def _section(token: str, values: Column) -> Column:
    kept = F.filter(values, lambda v: v.isNotNull() & (v != ""))
    return F.when(F.size(kept) > 0, F.concat(F.lit(token + " "), F.array_join(kept, " ")))


def _ranked(frame: DataFrame, group: list[str], value: str, key: Column, limit: int, name: str) -> DataFrame:
    """Per group, up to `limit` distinct `value`s by `key` descending, returned in ascending `key` order."""
    latest = frame.groupBy(*group, value).agg(F.max(key).alias("_key"))
    ranked = latest.withColumn("_rank", F.row_number().over(
        Window.partitionBy(*group).orderBy(F.col("_key").desc()))).where(F.col("_rank") <= limit)
    ordered = F.array_sort(F.collect_list(F.struct(F.col("_key"), F.col(value))))
    return ranked.groupBy(*group).agg(F.transform(ordered, lambda item: item.getField(value)).alias(name))


def _earlier_same_day(events: DataFrame, sessions: DataFrame, rules: dict) -> DataFrame:
    """Services and pages of the user's page views earlier that day, before the session began (latest last)."""
    earlier = (sessions.select("user_id", "session_id", "day", F.col("start"))
               .join(events.select("user_id", "day", "timestamp", "_order", "service", "activity"), ["user_id", "day"])
               .where(F.col("timestamp") < F.col("start"))
               .withColumn("service_word", word(F.col("service"))))
    when = F.struct("timestamp", "_order")
    services = _ranked(earlier, ["user_id", "session_id"], "service_word", when, rules["max_daily_services"],
                       "daily_services")
    pages = _ranked(earlier, ["user_id", "session_id"], "activity", when, rules["max_daily_pages"], "daily_pages")
    return services.join(pages, ["user_id", "session_id"], "full")


def _most_billed(frame: DataFrame, group: list[str], top: int, name: str) -> DataFrame:
    """Per group, the `top` most billed services (ties by name), most billed first."""
    ordered = F.array_sort(F.collect_list(F.struct((-F.col("cost")).alias("c"), F.col("service").alias("s"))))
    return frame.groupBy(*group).agg(F.transform(F.slice(ordered, 1, top), lambda item: word(item.getField("s")))
                                     .alias(name))


def _billed_before(sessions: DataFrame, billing: DataFrame, top: int) -> DataFrame:
    """Most billed services of the day before, and of the month so far up to the day before."""
    days = sessions.select("user_id", "day").distinct()
    daily_cost = billing.groupBy("user_id", "date", "service").agg(F.sum("cost").alias("cost"))
    yesterday = _most_billed(daily_cost.withColumn("day", F.date_add("date", 1)), ["user_id", "day"], top,
                             "daily_billed")
    # month to date as a running sum in date order, the polars path's summation order (so equal floats tie alike)
    in_month = Window.partitionBy("user_id", "service", F.trunc("date", "month")).orderBy("date")
    to_date = daily_cost.withColumn("cost", F.sum("cost").over(in_month.rowsBetween(Window.unboundedPreceding, 0)))
    month = (days.join(to_date, "user_id")
             .where((F.trunc("date", "month") == F.trunc("day", "month")) & (F.col("date") < F.col("day")))
             .groupBy("user_id", "day", "service").agg(F.max_by("cost", "date").alias("cost")))
    monthly = _most_billed(month, ["user_id", "day"], top, "monthly_billed")
    return days.join(yesterday, ["user_id", "day"], "left").join(monthly, ["user_id", "day"], "left")


def split_of(seed: int, proportions: list[float]):
    """serialize.split_sessions' draw of a user: a keyed BLAKE2b of the id as a number in [0, 1)."""
    total = sum(proportions)
    test_cut = 1.0 - proportions[2] / total
    validation_cut = test_cut - proportions[1] / total
    key = f"sessionbert-split-{seed}".encode()

    def split(user_id):  # no type hints: Spark would read them as a pandas UDF's
        draw = int.from_bytes(hashlib.blake2b(user_id.encode(), key=key, digest_size=8).digest(), "big") / 2.0**64
        return "test" if draw >= test_cut else "validation" if draw >= validation_cut else "train"

    return F.udf(split, T.StringType())


def run(spark: SparkSession, job: dict) -> dict:
    """Read, sessionize, serialize, split and write; the counts of what was written."""
    events = spark.read.parquet(job["events"]).withColumn("_order", F.monotonically_increasing_id())
    if job.get("days"):  # the run's days only (sessions are cut at midnight: a day's page views are its sessions)
        events = events.where(F.to_date("timestamp").isin([F.lit(day).cast("date") for day in job["days"]]))
    billing = spark.read.parquet(job["billing"])
    events = sessions_by_gap(events, job["rules"]["session_gap_minutes"])
    sessions = serialized(events, billing, job["rules"])
    users = sessions.select("user_id").distinct()
    users = users.withColumn("split", split_of(job["seed"], job["proportions"])(F.col("user_id")))
    result = sessions.join(users, "user_id").select(*OUTPUT_COLUMNS).orderBy("user_id", "start", "session_id")
    result.write.mode("overwrite").parquet(job["output"])
    written = spark.read.parquet(job["output"])
    per_split = {row["split"]: row["count"] for row in written.groupBy("split").count().collect()}
    return {"sessions": written.count(), "users": written.select("user_id").distinct().count(),
            **{f"sessions_{name}": per_split.get(name, 0) for name in ("train", "validation", "test")}}


def session(job: dict) -> SparkSession:
    """A Spark session on the job's master (`sc://...` is Spark Connect), times in UTC, Parquet timestamps
    written as microseconds (what polars reads as Datetime("us", "UTC"))."""
    builder = SparkSession.builder.appName("sessionbert-session-splits")
    master = job.get("master") or ""
    if master.startswith("sc://"):
        builder = builder.remote(master)
    elif master:
        builder = builder.master(master)
    return (builder.config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS").getOrCreate())


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = pipes.get_extra("job")
        spark = session(job)
        pipes.log.info(f"Spark {spark.version} on {job.get('master') or 'the default master'}: {job['events']}")
        counts = run(spark, job)
        pipes.report_asset_materialization(metadata={**counts, "engine": f"spark {spark.version}"})
        spark.stop()


if __name__ == "__main__":
    main()
