"""Ingestion: page views, quarantined rows and billing records from the landing folder."""

from datetime import date
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl

from sessionbert_assets.conditions import TRIGGER, follows_new_data
from sessionbert_assets.metadata import TABLE_ROWS, count, date_range, streamed, table
from sessionbert_assets.partitions import LANDING_FILES, SESSION_DAYS
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core import storage
from sessionbert_core.config import read_limits_from_env
from sessionbert_core.data.combine import Combined, Day, Targets, combine_days, landing_tables, read_landing
from sessionbert_core.data.exports.cloudtrail import Callers
from sessionbert_core.data.ingest import (
    IngestError,
    ParseCache,
    ParsedFile,
    ReadOptions,
    UnreadableFiles,
    discover,
)


class IngestConfig(dg.Config):
    # fail: a file that cannot be read fails the run; quarantine: it becomes a quarantine row of kind `file` and
    # the other files are ingested; auto: quarantine in a run a sensor, schedule or automation started (tagged
    # `sessionbert/trigger`: no person is there to mend the file), fail in a run launched by hand
    unreadable_files: Literal["auto", "fail", "quarantine"] = "auto"
    # CloudTrail: which callers' actions are page views (console: people in the web console; programmatic:
    # the CLI, SDKs and tools; all: both)
    cloudtrail_callers: Callers = "console"


def read_options(config: IngestConfig) -> ReadOptions:
    """What a parse keeps: CloudTrail's callers as configured, page views from the first day partition on, and
    how much of a file it reads (SESSIONBERT_MAX_FILE_BYTES, SESSIONBERT_MAX_LINE_BYTES, read as the run starts)."""
    return ReadOptions(config.cloudtrail_callers, first_day=SESSION_DAYS.start.date().isoformat(),
                       limits=read_limits_from_env())


@dg.asset(group_name="data", partitions_def=LANDING_FILES, backfill_policy=dg.BackfillPolicy.single_run(),
          deps=["landing_folder"], kinds={"polars", "parquet"})
def landing_files(context: dg.AssetExecutionContext, config: IngestConfig, sessionbert: SessionBertResource) -> None:
    """Each file of the landing folder read and validated alone: one partition per file, registered by
    `landing_folder` and by the new-data sensor, so a new file is one new partition and memory holds one file.

    The parse (valid rows, quarantined rows with file, line and reason, filtered rows, and the days its rows
    fall on) is kept in `$SESSIONBERT_HOME/ingest_cache` by content, where each day of `raw_sessions` reads
    its rows. Each partition shows its file's `read = valid + quarantined + filtered` and its days;
    duplicates across files are found later, by `raw_sessions`. A file that cannot be read fails its
    partition (or, with `unreadable_files: quarantine`, is reported there and quarantined by
    `quarantined_events`).
    """
    files = {f.name: f for f in discover(sessionbert.landing_path(), sessionbert.pseudonym_key())}
    store = ParseCache(sessionbert.home_path / "ingest_cache", sessionbert.pseudonym_key(),
                       read_options(config))
    mode = unreadable_mode(context, config)
    for key in context.partition_keys:
        f = files.get(key)
        if f is None or f.kind in ("ignored", "mapping"):
            context.add_asset_metadata({"state": "not in the landing folder now"}, partition_key=key)
            continue
        try:
            parsed = store.parse(f, key, with_rows=False)  # a file already parsed is looked up, not read
        except IngestError as error:
            if mode == "fail":
                raise dg.Failure(description=str(error)) from error
            context.log.warning(f"file refused (it becomes a quarantine row of raw_sessions): {error}")
            context.add_asset_metadata({"state": "refused", "problem": str(error), "kind": f.kind},
                                       partition_key=key)
            continue
        context.add_asset_metadata(file_metadata(parsed, store), partition_key=key)


def unreadable_mode(context: dg.AssetExecutionContext, config: IngestConfig) -> UnreadableFiles:
    """What this run does with a file it cannot read: as configured, else by who started the run."""
    if config.unreadable_files != "auto":
        return config.unreadable_files
    return "quarantine" if TRIGGER in context.run.tags else "fail"


def file_metadata(parsed: ParsedFile, store: ParseCache) -> dict:
    """One file's figures: what it was read as and where each row it holds went (counted from its stored parse)."""
    valid, quarantined = pl.scan_parquet(store.rows_path(parsed)).select(
        pl.col("_reason").is_null().sum(), pl.col("_reason").is_not_null().sum().alias("_q")).collect().row(0)
    filtered = int(parsed.filtered["rows"].sum()) if parsed.filtered is not None else 0
    days = {"days": len(parsed.days)} | ({"first_day": parsed.days[0], "last_day": parsed.days[-1]}
                                         if parsed.days else {})
    return {"state": "from cache" if parsed.from_cache else "parsed", "kind": parsed.kind,
            "read": parsed.read, "valid": int(valid),  # numbers: the UI plots them by file
            "quarantined": int(quarantined), "filtered": filtered,
            "quarantine_share": round(quarantined / max(parsed.read, 1), 4)} | days


@dg.multi_asset(
    group_name="data", partitions_def=SESSION_DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
    outs={
        "raw_sessions": dg.AssetOut(kinds={"polars", "parquet"}, description=(
            "Every valid page view of the day (user_id, session_id, timestamp UTC, service, page, country, city, "
            "billing_tier), sorted by user and session start: one Parquet file a day.")),
        "billing_records": dg.AssetOut(kinds={"polars", "parquet"}, description=(
            "Valid billing rows of the day (user_id, date, service, cost) from billing*.parquet|csv|jsonl.")),
    },
    deps=[dg.AssetDep("landing_files", partition_mapping=dg.AllPartitionMapping())],
)
def raw_sessions(context: dg.AssetExecutionContext, config: IngestConfig, sessionbert: SessionBertResource):
    """Each day's page views and billing, from every file of the landing folder that holds the day (event files,
    billing files, access logs and exports: CloudTrail, Snowplow, Segment, RudderStack, GA4, a table mapped in
    landing.yaml).

    One partition a day: the files' parses (cached by `landing_files`) say which days they hold, and a day
    reads only its own rows of those files, so a new day costs that day. The new-days sensor requests the
    days of each file read (a day of data is not known before its file is). Sessions are cut at midnight UTC and
    by a 30-minute gap for access logs; a session going on past midnight continues as `<id>@<day>`. A record
    repeated in another file is quarantined (its copies share a day). Where every row went, file by file, is
    counted by `quarantined_events` over every day.
    """
    home, days = sessionbert.home_path, [date.fromisoformat(key) for key in context.partition_keys]
    tables = _targets(home).days()
    try:
        landing = read_landing(sessionbert.landing_path(), sessionbert.pseudonym_key(), home / "ingest_cache",
                               unreadable_mode(context, config), read_options(config))
        events = billed = 0
        for day in combine_days(landing, days):
            tables.write(day)
            events, billed = events + day.events.height, billed + day.billing.height
            key = day.day.isoformat()
            context.add_asset_metadata(_day_metadata(day), partition_key=key, asset_key=dg.AssetKey("raw_sessions"))
            context.add_asset_metadata({"rows": count(day.billing.height)}, partition_key=key,
                                       asset_key=dg.AssetKey("billing_records"))
    except IngestError as error:
        raise dg.Failure(description=str(error)) from error
    in_data = set(landing.days())
    context.log.info(f"{len(days)} day(s) combined, {sum(d in in_data for d in days)} with rows in the landing "
                     f"folder: {events:,} page views, {billed:,} billing rows")
    yield dg.Output(storage.Parts(tables.events, events), "raw_sessions")
    yield dg.Output(storage.Parts(tables.billing, billed), "billing_records")


def _targets(home: Path) -> Targets:
    return Targets(*(home / f"{name}.parquet" for name in ("raw_sessions", "quarantined_events", "billing_records")))


def _day_metadata(day: Day) -> dict:
    """A day's figures: page views, sessions, users, the copies it found."""
    events = day.events
    sessions = events.select(pl.struct("user_id", "session_id").n_unique()).item()
    users = events["user_id"].n_unique()
    return {"headline": f"{events.height:,} page views in {sessions:,} sessions of {users:,} users on "
                        f"{day.day.isoformat()}",
            "page_views": count(events.height), "sessions": count(sessions), "users": count(users),
            "services": count(events["service"].n_unique()), "duplicates": count(day.duplicates.height),
            "billing_rows": count(day.billing.height), "files": count(day.counts.height)}


@dg.asset(group_name="data", kinds={"polars", "parquet"}, automation_condition=follows_new_data(
    "landing_folder", "landing_files"), deps=["raw_sessions", "billing_records",
                                              dg.AssetDep("landing_files", partition_mapping=dg.AllPartitionMapping())])
def quarantined_events(context: dg.AssetExecutionContext, config: IngestConfig,
                       sessionbert: SessionBertResource) -> storage.Parts:
    """Rows that failed validation, with source file, line, reason, detail and the raw row, unmodified: what each
    file's parse refused, the copies each day of `raw_sessions` found, and the files refused whole.

    Over every day combined it checks, for every file, `read = kept + quarantined + filtered`, and fails naming
    the days still to combine when rows are unaccounted for. Its page shows the whole ingest: page views,
    sessions, users and dates over every day, and each file's counts.
    """
    home = sessionbert.home_path
    targets = _targets(home)
    try:
        landing = read_landing(sessionbert.landing_path(), sessionbert.pseudonym_key(), home / "ingest_cache",
                               unreadable_mode(context, config), read_options(config))
        result = landing_tables(landing, targets.days(), targets.quarantine)
    except IngestError as error:
        raise dg.Failure(description=str(error)) from error
    quarantine = storage.scan_table(targets.quarantine)
    refused = quarantine.filter(pl.col("reason") == "unreadable file").collect()  # not a file cut short
    for problem in refused["detail"]:
        context.log.warning(f"file refused and quarantined: {problem}")
    if result.files.height > TABLE_ROWS:
        for row in result.files.iter_rows(named=True):
            context.log.info(f"file {row['file']}: read {row['read']} = kept {row['kept']} + quarantined "
                             f"{row['quarantined']} + filtered {row['filtered']} ({row['parsed']})")
    rows_read = result.files.select(pl.col("read").sum()).item()
    context.add_output_metadata({
        "rows": count(result.quarantine.rows),
        "share_of_rows_read": round(result.quarantine.rows / max(rows_read, 1), 4),
        "reasons": table(quarantine.group_by("kind", "reason").agg(rows=pl.len().cast(pl.Int64))
                         .sort("rows", descending=True).collect()),
        **_events_metadata(result, refused), **_billing_metadata(result)})
    return result.quarantine


def _billing_metadata(result: Combined) -> dict:
    billing = storage.scan_table(result.billing.folder) if storage.day_paths(result.billing.folder) else None
    return {"billing_rows": count(result.billing.rows),
            "billing_rows_read": count(result.files.filter(pl.col("kind") == "billing")["read"].sum()),
            "billed_users": count(streamed(billing, pl.col("user_id").n_unique()) if billing is not None else 0),
            "total_cost": round(float((streamed(billing, pl.col("cost").sum()) if billing is not None else 0) or 0),
                                2)}


def _events_metadata(result: Combined, refused: pl.DataFrame) -> dict:
    """What a person checks on the page views: counts, dates, and each file's read = kept + quarantined + filtered.
    Counted as a stream over the days, so memory holds a few columns, not the table."""
    events, files = storage.scan_table(result.events.folder), result.files
    totals = files.filter(pl.col("kind") != "billing").select(pl.col("read", "filtered").sum()).to_dicts()[0]
    counted = {name: streamed(events, expression) for name, expression in (
        ("sessions", pl.struct("user_id", "session_id").n_unique()), ("users", pl.col("user_id").n_unique()),
        ("services", pl.col("service").n_unique()), ("activities", pl.struct("service", "page").n_unique()))}
    return {
        "headline": f"{result.events.rows:,} page views in {counted['sessions']:,} sessions of "
                    f"{counted['users']:,} users, {totals['read']:,} records read",
        "page_views": count(result.events.rows),
        "sessions": count(counted["sessions"]),
        "users": count(counted["users"]),
        "date_range": date_range(events, "timestamp"),
        "days": dg.MetadataValue.int(result.parts),  # days of raw_sessions, each combined alone
        "services": count(counted["services"]),
        "activities": count(counted["activities"]),
        "rows_read": count(totals["read"]),
        "rows_filtered": count(totals["filtered"]),
        "files": table(files.drop("parsed")),  # how each was read: files_parsed, files_from_cache (a page wide)
        "files_listed": f"{min(files.height, TABLE_ROWS)} of {files.height} files in the table above"
                        + ("" if files.height <= TABLE_ROWS else "; every file is in this run's log"),
        "files_parsed": int((files["parsed"] == "parsed").sum()),
        "files_from_cache": int((files["parsed"] == "from cache").sum()),
        "files_refused": dg.MetadataValue.md("\n".join(f"- {p}" for p in refused["detail"]) or "none"),
        "filtered_reasons": table(result.filtered),
        "ignored_files": ", ".join(result.ignored) or "none",
    }
