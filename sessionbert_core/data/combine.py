"""The landing folder's files combined: sessions cut by gap and duplicates found across files, in parts of whole users.

Each file is parsed and validated alone (`ingest.ParseCache`). What needs every file at once (sessions cut
by a 30-minute gap, a record repeated in another file) is a rule about one user's rows, so the valid rows of
each parsed file, one file at a time, are split into parts that each hold a range of users, and each part
is then combined alone: memory holds one file or one part, never the landing folder. The
ranges follow the sorted user ids, so the parts read in order are the table a single frame would give,
sorted by user and session start. A part holds about `ROWS_PER_PART` page views, so a small folder is one.

Every row read ends in exactly one place: kept, quarantined (with file, line and reason, the raw row
kept whole) or filtered (access logs only: static files, crawlers, failed requests, counted by
reason), so `read = kept + quarantined + filtered` holds for every file. A file that cannot be read
at all, or lacks a required column, raises `IngestError` naming the file (or, asked, becomes a quarantine
row of kind `file`). Nothing is written to the landing folder.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data import access_log
from sessionbert_core.data.access_log import sessions_by_gap
from sessionbert_core.data.ingest import (
    PAGE_VIEW_KINDS,
    UNREADABLE_MODES,
    LandingFile,
    ParseCache,
    ParsedFile,
    ReadOptions,
    discover,
)
from sessionbert_core.data.validate import (
    BILLING_SCHEMA,
    EVENT_SCHEMA,
    QUARANTINE_SCHEMA,
    kept_events,
    quarantine_duplicates,
)
from sessionbert_core.errors import IngestError

ROWS_PER_PART = 1_000_000  # page views per part: about 2 GiB of working memory to combine one


@dataclass(frozen=True)
class Targets:
    """Where the combined tables go, each a folder of parts."""

    events: Path
    quarantine: Path
    billing: Path


@dataclass(frozen=True)
class Combined:
    events: storage.Parts  # EVENT_SCHEMA, sorted by user, session start, time
    billing: storage.Parts  # BILLING_SCHEMA
    quarantine: storage.Parts  # QUARANTINE_SCHEMA
    files: pl.DataFrame  # one row per file: read, kept, quarantined, filtered, parsed (or from cache, refused)
    filtered: pl.DataFrame  # source_file, reason, rows
    ignored: tuple[str, ...]  # files in the folder that are none of the above
    parts: int


@dataclass(frozen=True)
class Ingested:
    """The combined tables in memory (`ingest_landing`), for folders that fit in it."""

    events: pl.DataFrame
    billing: pl.DataFrame
    quarantine: pl.DataFrame
    files: pl.DataFrame
    filtered: pl.DataFrame
    ignored: tuple[str, ...]


def ingest_landing(folder: Path, pseudonym_key: bytes, cache: Path | None = None,
                   unreadable: str = "fail", options: ReadOptions | None = None) -> Ingested:
    """`combine_landing` read back into memory. Without `cache`, the parses are kept in a temporary folder.

    With `cache`, each file's parsed and validated rows are kept there under a digest of its content
    (and of the parser's own code), so a file already seen is not parsed again: adding one file to a
    folder of thousands parses one file. Duplicates across files are still found, over all rows.
    `unreadable="quarantine"` turns a file that cannot be read (or lacks a required column) into a
    quarantine row of kind `file` instead of an error, so one bad file does not block the others.
    """
    with tempfile.TemporaryDirectory(prefix="sessionbert-ingest-") as work:
        work = Path(work)
        targets = Targets(work / "events", work / "quarantine", work / "billing")
        combined = combine_landing(folder, pseudonym_key, cache or work / "cache", targets, unreadable, options)
        return Ingested(storage.read_table(targets.events), storage.read_table(targets.billing),
                        _in_reading_order(storage.read_table(targets.quarantine), combined.files),
                        combined.files, combined.filtered, combined.ignored)


def combine_landing(folder: Path, pseudonym_key: bytes, cache: Path, targets: Targets, unreadable: str = "fail",
                    options: ReadOptions | None = None, rows_per_part: int = ROWS_PER_PART) -> Combined:
    """Every file of the landing folder parsed (or taken from `cache`) and combined into `targets`."""
    if unreadable not in UNREADABLE_MODES:
        raise ValueError(f"unreadable must be one of {', '.join(UNREADABLE_MODES)}, not {unreadable!r}")
    found = discover(Path(folder))
    files = [f for f in found if f.kind not in ("ignored", "mapping")]
    if not any(f.kind in PAGE_VIEW_KINDS for f in files):
        raise IngestError(f"{folder}: no event files, access logs or exports (CloudTrail, Snowplow, Segment, "
                          "RudderStack, GA4, or a table mapped in landing.yaml)")
    store = ParseCache(Path(cache), pseudonym_key, options or ReadOptions())
    parsed, rejected = _parse_all(store, files, unreadable)
    if not any(p.kind != "billing" for p in parsed):
        raise IngestError(f"{folder}: no event file or access log could be read: "
                          + "; ".join(problem for _, _, problem in rejected))
    filtered = [p.filtered for p in parsed if p.filtered is not None]
    filtered_df = pl.concat(filtered) if filtered else pl.DataFrame(schema=access_log.FILTERED_SCHEMA)
    with (storage.PartsWriter(targets.quarantine) as quarantine, storage.PartsWriter(targets.events) as kept,
          storage.PartsWriter(targets.billing) as billed):
        for index, p in enumerate(parsed):  # what the parse refused, file by file
            rows = quarantined_rows(pl.scan_parquet(store.rows_path(p)), "billing" if p.kind == "billing" else "event")
            if (refused := rows.collect()).height:
                quarantine.write(refused, f"a-file-{index:06d}")
        if rejected:
            quarantine.write(_rejected_files(rejected), "c-refused")
        duplicates, parts = _combine_in_parts(store, parsed, kept, billed, quarantine, rows_per_part)
        counts = _file_counts(store, parsed, rejected, duplicates, filtered_df)
        _check_conservation(counts)  # before any table is replaced: all three change together, or none
        return Combined(events=kept.commit(EVENT_SCHEMA), billing=billed.commit(BILLING_SCHEMA),
                        quarantine=quarantine.commit(QUARANTINE_SCHEMA), files=counts, filtered=filtered_df,
                        ignored=tuple(f"{f.name} ({f.reason})" for f in found if f.kind == "ignored"), parts=parts)


def _parse_all(store: ParseCache, files: list[LandingFile], unreadable: str):
    """Each file parsed alone into the cache; what is kept in memory is its figures, not its rows."""
    parsed, rejected = [], []
    for f in files:
        try:
            parsed.append(store.parse(f, f.name, with_rows=False))
        except IngestError as error:
            if unreadable == "fail":
                raise
            rejected.append((f.name, f.kind, str(error)))
    store.keep_only({p.key for p in parsed})
    return parsed, rejected


def _combine_in_parts(store: ParseCache, parsed: list[ParsedFile], kept: storage.PartsWriter,
                      billed: storage.PartsWriter, quarantine: storage.PartsWriter, rows_per_part: int):
    """Valid rows split file by file into ranges of users, then each range combined alone: sessions by gap,
    duplicates."""
    valid = pl.col("_reason").is_null()
    events = pl.concat([pl.scan_parquet(store.rows_path(p)) for p in parsed if p.kind != "billing"],
                       how="diagonal_relaxed").filter(valid)
    billing_scans = [pl.scan_parquet(store.rows_path(p)) for p in parsed if p.kind == "billing"]
    billing = kept_rows(pl.concat(billing_scans, how="diagonal_relaxed"), BILLING_SCHEMA) if billing_scans else None
    page_views = events.select(pl.len()).collect(engine="streaming").item()
    bounds = _user_bounds(events, billing, math.ceil(page_views / rows_per_part))
    counted = []
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=kept.target.parent) as work:
        work = Path(work)
        for index, p in enumerate(parsed):  # one file at a time: its valid rows into the ranges of users
            rows = pl.scan_parquet(store.rows_path(p)).filter(valid)
            _split_by_range(kept_rows(rows, BILLING_SCHEMA) if p.kind == "billing" else rows, bounds,
                            work / ("billing" if p.kind == "billing" else "events"), f"{index:06d}")
        for index in range(len(bounds) + 1):
            if (rows := _read_part(work / "events", index)) is not None:  # a range may hold only billed users
                combined = quarantine_duplicates(sessions_by_gap(rows))
                if (found := quarantined_rows(combined, "event")).height:
                    quarantine.write(found, f"b-duplicates-{index:05d}")
                    counted.append(found.group_by(pl.col("source_file").alias("file")).agg(duplicates=pl.len()))
                kept.write(kept_events(combined), f"part-{index:05d}")
            if (rows := _read_part(work / "billing", index)) is not None:
                billed.write(rows, f"part-{index:05d}")
    duplicates = (pl.concat(counted).group_by("file").agg(pl.col("duplicates").sum().cast(pl.Int64)) if counted
                  else pl.DataFrame(schema={"file": pl.String, "duplicates": pl.Int64}))
    return duplicates, len(bounds) + 1


def _split_by_range(rows: pl.LazyFrame, bounds: list[str], folder: Path, name: str) -> None:
    """One file's rows written as `folder/_part=K/name.parquet`, K the range of each row's user. (polars'
    partitioned sink does this for all files in one query, but held 6.5 GiB for 40 files of the paper's
    world where this holds one file.)"""
    first_users = pl.lit(pl.Series(bounds, dtype=pl.String))
    part_of = first_users.search_sorted(pl.col("user_id").str.strip_chars(), side="right")
    for (part,), group in rows.with_columns(_part=part_of).collect().partition_by("_part", as_dict=True).items():
        (folder / f"_part={part}").mkdir(parents=True, exist_ok=True)
        group.drop("_part").write_parquet(folder / f"_part={part}" / f"{name}.parquet")


def _user_bounds(events: pl.LazyFrame, billing: pl.LazyFrame | None, parts: int) -> list[str]:
    """The first user of each part after the first: `parts` ranges of about as many users each."""
    if parts <= 1:
        return []
    ids = [events.select(pl.col("user_id").str.strip_chars())]
    if billing is not None:
        ids.append(billing.select("user_id"))
    users = pl.concat(ids).unique().sort("user_id").collect(engine="streaming")["user_id"]
    parts = min(parts, users.len())
    return [users[i * users.len() // parts] for i in range(1, parts)]


def _read_part(folder: Path, index: int) -> pl.DataFrame | None:
    """One range's rows in the order they were read (files in name order, lines in order)."""
    paths = sorted((folder / f"_part={index}").glob("*.parquet"))  # files of several kinds: columns differ
    return pl.concat([pl.read_parquet(path) for path in paths], how="diagonal_relaxed") if paths else None


# ----------------------------------------------------------------------------------------------
# results


def kept_rows(frame, schema: dict):
    """Valid billing rows as BILLING_SCHEMA (a DataFrame or a LazyFrame)."""
    return frame.filter(pl.col("_reason").is_null()).select(
        pl.col("user_id").str.strip_chars(), pl.col("_date").alias("date"), pl.col("service").str.strip_chars(),
        pl.col("_cost").alias("cost")).cast(schema)


def quarantined_rows(frame, kind: str):
    """The rows a rule refused, as QUARANTINE_SCHEMA (a DataFrame or a LazyFrame)."""
    return frame.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("source_file"), pl.col("_line").alias("line"), pl.lit(kind).alias("kind"),
        pl.col("_reason").alias("reason"), pl.col("_detail").alias("detail"), pl.col("_raw").alias("raw"),
    ).cast(QUARANTINE_SCHEMA)


def _rejected_files(rejected: list[tuple[str, str, str]]) -> pl.DataFrame:
    """One quarantine row per file refused whole: no line, the problem as detail, nothing to show as raw."""
    return pl.DataFrame({"source_file": [n for n, _, _ in rejected], "line": [None] * len(rejected),
                         "kind": ["file"] * len(rejected), "reason": ["unreadable file"] * len(rejected),
                         "detail": [problem for _, _, problem in rejected], "raw": [""] * len(rejected)},
                        schema=QUARANTINE_SCHEMA)


def _in_reading_order(quarantine: pl.DataFrame, files: pl.DataFrame) -> pl.DataFrame:
    """Quarantined rows as the files were read: page-view files, then billing, then refused files; by line."""
    order = files.select("file", _kind=pl.col("kind").replace_strict({"billing": 1}, default=0, return_dtype=pl.Int8),
                         _index=pl.int_range(pl.len()))
    return (quarantine.with_row_index("_row").join(order, left_on="source_file", right_on="file", how="left")
            .with_columns(pl.when(pl.col("kind") == "file").then(2).otherwise("_kind").alias("_kind"))
            .sort("_kind", "_index", "line", "_row", nulls_last=True).drop("_row", "_kind", "_index"))


def _file_counts(store: ParseCache, parsed: list[ParsedFile], rejected: list[tuple[str, str, str]],
                 duplicates: pl.DataFrame, filtered: pl.DataFrame) -> pl.DataFrame:
    """Per file: read, kept, quarantined (by its parse or as a duplicate), filtered, and whether it was parsed."""
    outcomes = [pl.scan_parquet(store.rows_path(p)).select(
        file=pl.lit(p.name), valid=pl.col("_reason").is_null().sum(), refused=pl.col("_reason").is_not_null().sum())
        for p in parsed]
    counted = (pl.concat(outcomes).collect().cast({"valid": pl.Int64, "refused": pl.Int64})
               if outcomes else pl.DataFrame(schema={"file": pl.String, "valid": pl.Int64, "refused": pl.Int64}))
    dropped = filtered.group_by("source_file").agg(filtered=pl.col("rows").sum()).rename({"source_file": "file"})
    listing = pl.DataFrame(
        {"file": [p.name for p in parsed] + [n for n, _, _ in rejected],
         "kind": [p.kind for p in parsed] + [k for _, k, _ in rejected],
         "read": [p.read for p in parsed] + [0] * len(rejected),
         "parsed": ["from cache" if p.from_cache else "parsed" for p in parsed] + ["refused"] * len(rejected)},
        schema={"file": pl.String, "kind": pl.String, "read": pl.Int64, "parsed": pl.String})
    return (
        listing.join(counted, on="file", how="left").join(duplicates, on="file", how="left")
        .join(dropped, on="file", how="left")
        .with_columns(pl.col("valid", "refused", "duplicates", "filtered").fill_null(0).cast(pl.Int64))
        .with_columns(kept=pl.col("valid") - pl.col("duplicates"),
                      quarantined=pl.col("refused") + pl.col("duplicates"))
        .select("file", "kind", "read", "kept", "quarantined", "filtered", "parsed")
    )


def _check_conservation(files: pl.DataFrame) -> None:
    broken = files.filter(pl.col("read") != pl.col("kept") + pl.col("quarantined") + pl.col("filtered"))
    if broken.height:
        raise AssertionError(f"rows read != kept + quarantined + filtered for: {broken.to_dicts()}")
