"""Ingestion: page views, quarantined rows and billing records from the landing folder."""

from typing import Literal

import dagster as dg
import polars as pl

from sessionbert_assets.conditions import TRIGGER, follows_new_data
from sessionbert_assets.metadata import TABLE_ROWS, count, date_range, streamed, table
from sessionbert_assets.partitions import LANDING_FILES
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core import storage
from sessionbert_core.data.combine import Combined, Targets, combine_landing
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


@dg.asset(group_name="data", partitions_def=LANDING_FILES, backfill_policy=dg.BackfillPolicy.single_run(),
          deps=["landing_folder"], kinds={"polars", "parquet"})
def landing_files(context: dg.AssetExecutionContext, config: IngestConfig, sessionbert: SessionBertResource) -> None:
    """Each file of the landing folder read and validated alone: one partition per file, registered by
    `landing_folder` and by the new-data sensor, so a new file is one new partition and memory holds one file.

    The parse (valid rows, quarantined rows with file, line and reason, filtered rows) is kept in
    `$SESSIONBERT_HOME/ingest_cache` by content, where `raw_sessions` combines the files. Each partition
    shows its file's `read = valid + quarantined + filtered`; duplicates across files are found later, by
    `raw_sessions`. A file that cannot be read fails its partition (or, with `unreadable_files: quarantine`,
    is reported there and quarantined by `raw_sessions`).
    """
    files = {f.name: f for f in discover(sessionbert.landing_path())}
    store = ParseCache(sessionbert.home_path / "ingest_cache", sessionbert.pseudonym_key(),
                       ReadOptions(config.cloudtrail_callers))
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
    return {"state": "from cache" if parsed.from_cache else "parsed", "kind": parsed.kind,
            "read": parsed.read, "valid": int(valid),  # numbers: the UI plots them by file
            "quarantined": int(quarantined), "filtered": filtered,
            "quarantine_share": round(quarantined / max(parsed.read, 1), 4)}


# the combination follows new landing_files partitions; a refreshed landing_folder alone starts nothing
FOLLOWS = follows_new_data("landing_folder")


@dg.multi_asset(
    group_name="data",
    outs={
        "raw_sessions": dg.AssetOut(kinds={"polars", "parquet"}, automation_condition=FOLLOWS, description=(
            "Every valid page view (user_id, session_id, timestamp UTC, service, page, country, city, "
            "billing_tier), sorted by user and session start.")),
        "quarantined_events": dg.AssetOut(kinds={"polars", "parquet"}, automation_condition=FOLLOWS, description=(
            "Rows that failed validation, with source file, line, reason, detail and the raw row, unmodified.")),
        "billing_records": dg.AssetOut(kinds={"polars", "parquet"}, automation_condition=FOLLOWS, description=(
            "Valid billing rows (user_id, date, service, cost) from billing*.parquet|csv|jsonl.")),
    },
    deps=["landing_files"],
)
def raw_sessions(context: dg.AssetExecutionContext, config: IngestConfig, sessionbert: SessionBertResource,
                 landing_folder: dict):
    """Read every event file, billing file, access log and export (CloudTrail, Snowplow, Segment, RudderStack,
    GA4, a table mapped in landing.yaml) of the landing folder, each recognized by its content.

    For every file `read = kept + quarantined + filtered`; a file that cannot be read, or lacks a
    required column, fails the run with its name (or, with `unreadable_files: quarantine`, becomes a
    quarantine row). Client hosts of access logs are pseudonymized. Incremental: each file's parse
    is kept under `$SESSIONBERT_HOME/ingest_cache` by content (what the `landing_files` partitions
    write), so only files no partition has parsed yet are read here; duplicates and sessions by gap
    are found here, over every file.
    """
    home = sessionbert.home_path
    targets = Targets(*(home / f"{name}.parquet" for name in ("raw_sessions", "quarantined_events", "billing_records")))
    try:
        result = combine_landing(landing_folder["folder"], sessionbert.pseudonym_key(), home / "ingest_cache",
                                 targets, unreadable_mode(context, config), ReadOptions(config.cloudtrail_callers))
    except IngestError as error:
        raise dg.Failure(description=str(error)) from error
    quarantine = storage.read_table(targets.quarantine)
    refused = quarantine.filter(pl.col("kind") == "file")
    for problem in refused["detail"]:
        context.log.warning(f"file refused and quarantined: {problem}")
    if result.files.height > TABLE_ROWS:
        for row in result.files.iter_rows(named=True):
            context.log.info(f"file {row['file']}: read {row['read']} = kept {row['kept']} + quarantined "
                             f"{row['quarantined']} + filtered {row['filtered']} ({row['parsed']})")
    rows_read = result.files.select(pl.col("read").sum()).item()
    yield dg.Output(result.events, "raw_sessions", metadata=_events_metadata(result, refused))
    yield dg.Output(result.quarantine, "quarantined_events", metadata={
        "rows": count(quarantine.height), "share_of_rows_read": round(quarantine.height / max(rows_read, 1), 4),
        "reasons": table(quarantine.group_by("kind", "reason").agg(rows=pl.len().cast(pl.Int64))
                         .sort("rows", descending=True)),
    })
    yield dg.Output(result.billing, "billing_records", metadata=_billing_metadata(result))


def _billing_metadata(result: Combined) -> dict:
    billing = storage.scan_table(result.billing.folder)
    return {"rows": count(result.billing.rows),
            "rows_read": count(result.files.filter(pl.col("kind") == "billing")["read"].sum()),
            "users": count(streamed(billing, pl.col("user_id").n_unique())), "date_range": date_range(billing, "date"),
            "total_cost": round(float(streamed(billing, pl.col("cost").sum()) or 0), 2)}


def _events_metadata(result: Combined, refused: pl.DataFrame) -> dict:
    """What a person checks on the page views: counts, dates, and each file's read = kept + quarantined + filtered.
    Counted as a stream over the parts, so memory holds a few columns, not the table."""
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
        "services": count(counted["services"]),
        "activities": count(counted["activities"]),
        "rows_read": count(totals["read"]),
        "rows_filtered": count(totals["filtered"]),
        "parts": dg.MetadataValue.int(result.parts),  # ranges of users, each combined alone
        "files": table(files),
        "files_listed": f"{min(files.height, TABLE_ROWS)} of {files.height} files in the table above"
                        + ("" if files.height <= TABLE_ROWS else "; every file is in this run's log"),
        "files_parsed": int((files["parsed"] == "parsed").sum()),
        "files_from_cache": int((files["parsed"] == "from cache").sum()),
        "files_refused": dg.MetadataValue.md("\n".join(f"- {p}" for p in refused["detail"]) or "none"),
        "filtered_reasons": table(result.filtered),
        "ignored_files": ", ".join(result.ignored) or "none",
    }
