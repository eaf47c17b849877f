"""The landing folder's files combined day by day: sessions cut by gap and duplicates found across files.

Each file is parsed and validated alone (`ingest.ParseCache`), and its parse knows which UTC days its valid page
views fall on. What needs several files at once (a session cut by a 30-minute gap, a record repeated in another
file) is a rule about one user's rows of one day, so each day is combined alone: the files holding it are read
once (one file at a time, only that day's rows kept) and memory holds one file or one day, never the landing
folder: a new day costs that day, whatever lies in the landing folder before it.

Sessions are cut at midnight UTC, so a day sessionizes alone: a session going on past midnight continues as a
session of the next day, its id followed by `@<day>` (all its page views kept, under a key of its own).
Duplicates have the same time, so the same day: they are found within it. Every row read ends in one place:
kept, quarantined (with file, line, reason and the raw row) or filtered (access logs: static files, crawlers,
failed requests), so `read = kept + quarantined + filtered` holds for every file once its days are combined
(`landing_tables` names the days missing otherwise). A file that cannot be read, or lacks a required column,
raises `IngestError` naming it (or, asked, becomes a quarantine row of kind `file`; so does the line a file was
cut short in, `reading`). Nothing is written to the landing folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data import access_log, reading
from sessionbert_core.data.access_log import sessions_by_gap
from sessionbert_core.data.ingest import (
    PAGE_VIEW_KINDS,
    UNREADABLE_MODES,
    LandingFile,
    ParseCache,
    ParsedFile,
    ReadOptions,
    day_of,
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

COUNTS_SCHEMA = {"file": pl.String, "kept": pl.Int64, "duplicates": pl.Int64}


@dataclass(frozen=True)
class Landing:
    """The landing folder's files parsed (or taken from the cache), not yet combined."""

    store: ParseCache
    parsed: list[ParsedFile]  # the files read, in name order
    rejected: list[tuple[str, str, str]]  # name, kind, problem of each file refused whole
    filtered: pl.DataFrame  # source_file, reason, rows
    ignored: tuple[str, ...]  # files in the folder that are none of the above

    def days(self) -> list[date]:
        """Every day a valid page view or billing row falls on, in order."""
        return sorted({date.fromisoformat(day) for p in self.parsed for day in p.days})


def read_landing(folder: Path, pseudonym_key: bytes, cache: Path, unreadable: str = "fail",
                 options: ReadOptions | None = None) -> Landing:
    """Every file of the landing folder parsed into `cache` (or found there): what is kept in memory is each
    file's figures, not its rows."""
    if unreadable not in UNREADABLE_MODES:
        raise ValueError(f"unreadable must be one of {', '.join(UNREADABLE_MODES)}, not {unreadable!r}")
    found = discover(Path(folder), pseudonym_key)
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
    return Landing(store, parsed, rejected,
                   pl.concat(filtered) if filtered else pl.DataFrame(schema=access_log.FILTERED_SCHEMA),
                   tuple(f"{f.name} ({f.reason})" for f in found if f.kind == "ignored"))


def _parse_all(store: ParseCache, files: list[LandingFile], unreadable: str):
    """Each file parsed alone into the cache."""
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


# ----------------------------------------------------------------------------------------------
# one day


@dataclass(frozen=True)
class Day:
    """One day combined: its page views, the copies found among them, and where each file's rows went."""

    day: date
    events: pl.DataFrame  # EVENT_SCHEMA, sorted by user, session start, time
    billing: pl.DataFrame  # BILLING_SCHEMA
    duplicates: pl.DataFrame  # QUARANTINE_SCHEMA
    counts: pl.DataFrame  # COUNTS_SCHEMA: per file, the day's rows kept and quarantined as duplicates


def combine_days(landing: Landing, days: Iterable[date]) -> Iterator[Day]:
    """Each of `days` combined alone (a day with no row gives empty tables).

    The files holding any of them are read once, one file at a time, each day's rows set apart; the page
    views of the day before the first are read too, for their session ids (a session going on past midnight)."""
    days = sorted(set(days))
    if not days:
        return
    before = days[0] - timedelta(days=1)
    wanted = {*days, before}
    with tempfile.TemporaryDirectory(prefix=".days-", dir=landing.store.folder.parent) as work:
        work = Path(work)
        for index, p in enumerate(landing.parsed):
            of_file = wanted if p.kind in PAGE_VIEW_KINDS else set(days)  # the day before: its page views only
            if of_file & {date.fromisoformat(day) for day in p.days}:
                _split_by_day(landing.store, p, of_file, work / ("billing" if p.kind == "billing" else "events"),
                              f"{index:06d}")
        earlier = _session_keys(_read_day(work / "events", before))
        for day in days:
            rows = _read_day(work / "events", day)
            yield _combine_day(day, rows, _read_day(work / "billing", day), earlier)
            earlier = _session_keys(rows)


def _split_by_day(store: ParseCache, parsed: ParsedFile, days: set[date], folder: Path, name: str) -> None:
    """One file's valid rows of `days` written as `folder/<day>/name.parquet`."""
    when = pl.col(day_of(parsed.kind)).cast(pl.Date)
    rows = (pl.scan_parquet(store.rows_path(parsed))
            .filter(pl.col("_reason").is_null() & when.is_in(list(days))).with_columns(_day=when).collect())
    for (day,), group in rows.partition_by("_day", as_dict=True).items():
        (folder / day.isoformat()).mkdir(parents=True, exist_ok=True)
        group.drop("_day").write_parquet(folder / day.isoformat() / f"{name}.parquet")


def _read_day(folder: Path, day: date) -> pl.DataFrame | None:
    """One day's rows in the order they were read (files in name order, lines in order)."""
    paths = sorted((folder / day.isoformat()).glob("*.parquet"))  # files of several kinds: columns differ
    return pl.concat([pl.read_parquet(path) for path in paths], how="diagonal_relaxed") if paths else None


def _session_keys(rows: pl.DataFrame | None) -> pl.DataFrame:
    """(user_id, session_id) of the sessions a file names (not those cut by gap), as `kept_events` writes them."""
    schema = {"user_id": pl.String, "session_id": pl.String}
    if rows is None:
        return pl.DataFrame(schema=schema)
    named = rows.filter(~pl.col("_gap").fill_null(False)) if "_gap" in rows.columns else rows
    return named.select(pl.col("user_id", "session_id").str.strip_chars()).unique().cast(schema)


def _combine_day(day: date, rows: pl.DataFrame | None, billed: pl.DataFrame | None, earlier: pl.DataFrame) -> Day:
    billing = kept_rows(billed, BILLING_SCHEMA) if billed is not None else pl.DataFrame(schema=BILLING_SCHEMA)
    billing_counts = (billed.group_by(pl.col("_file").alias("file")).agg(kept=pl.len(), duplicates=pl.lit(0))
                      .cast(COUNTS_SCHEMA) if billed is not None else pl.DataFrame(schema=COUNTS_SCHEMA))
    if rows is None:
        return Day(day, pl.DataFrame(schema=EVENT_SCHEMA), billing, pl.DataFrame(schema=QUARANTINE_SCHEMA),
                   billing_counts.sort("file"))
    combined = quarantine_duplicates(sessions_by_gap(rows))
    counts = combined.group_by(pl.col("_file").alias("file")).agg(
        kept=pl.col("_reason").is_null().sum(), duplicates=pl.col("_reason").is_not_null().sum()).cast(COUNTS_SCHEMA)
    counts = pl.concat([counts, billing_counts])
    events = kept_events(combined)
    goes_on = pl.struct("user_id", "session_id").is_in(earlier.select(pl.struct(pl.all())).to_series().implode())
    if events.select(goes_on.any()).item():  # sessions begun the day before: same page views, a key of their own
        events = kept_order(events.with_columns(
            session_id=pl.when(goes_on).then(pl.col("session_id") + f"@{day.isoformat()}").otherwise("session_id")))
    return Day(day, events, billing, quarantined_rows(combined, "event"), counts.sort("file"))


def kept_order(events: pl.DataFrame) -> pl.DataFrame:
    """Page views by user, session start, session, time: the order of `raw_sessions`."""
    return events.with_columns(_start=pl.col("timestamp").min().over("user_id", "session_id")).sort(
        "user_id", "_start", "session_id", "timestamp", maintain_order=True).drop("_start")


# ----------------------------------------------------------------------------------------------
# the days kept, and the tables over every day


@dataclass(frozen=True)
class DayTables:
    """Where combined days are kept: `events/<day>.parquet` (the page views), `billing/<day>.parquet` and
    `ledger/<day>/` (the day's duplicates and per-file counts, read back by `landing_tables`)."""

    events: Path
    billing: Path
    ledger: Path

    def write(self, day: Day) -> None:
        storage.write_day(day.events, self.events, day.day)
        storage.write_day(day.billing, self.billing, day.day)
        staging = storage.staging_folder(self.ledger / day.day.isoformat())
        day.duplicates.write_parquet(staging / "duplicates.parquet")
        day.counts.write_parquet(staging / "counts.parquet")
        storage.replace_folder(staging, self.ledger / day.day.isoformat())

    def days(self) -> list[date]:
        """The days combined so far (both their page views and their ledger kept)."""
        kept = {path.stem for path in storage.part_paths(self.events)}
        return sorted(date.fromisoformat(path.parent.name) for path in self.ledger.glob("*/counts.parquet")
                      if path.parent.name in kept)

    def forget(self, days: Iterable[date]) -> None:
        """Days no longer in the landing folder: their tables removed."""
        for day in days:
            for table in (self.events, self.billing):
                (table / f"{day.isoformat()}.parquet").unlink(missing_ok=True)
            storage.remove_folder(self.ledger / day.isoformat())

    def duplicates(self) -> pl.LazyFrame:
        paths = sorted(self.ledger.glob("*/duplicates.parquet"))
        return pl.scan_parquet(paths) if paths else pl.LazyFrame(schema=QUARANTINE_SCHEMA)

    def counts(self) -> pl.DataFrame:
        """Per file, its rows kept and found twice over every day."""
        paths = sorted(self.ledger.glob("*/counts.parquet"))
        counts = pl.read_parquet(paths) if paths else pl.DataFrame(schema=COUNTS_SCHEMA)
        return counts.group_by("file").agg(pl.col("kept", "duplicates").sum()).cast(COUNTS_SCHEMA)


@dataclass(frozen=True)
class Targets:
    """Where the combined tables go: page views and billing by day, quarantine a folder of parts."""

    events: Path
    quarantine: Path
    billing: Path

    def days(self) -> DayTables:
        return DayTables(self.events, self.billing, self.events.with_name(f".{self.events.name}.ledger"))


@dataclass(frozen=True)
class Combined:
    events: storage.Parts  # EVENT_SCHEMA, a part per day, each sorted by user, session start, time
    billing: storage.Parts  # BILLING_SCHEMA, a part per day
    quarantine: storage.Parts  # QUARANTINE_SCHEMA
    files: pl.DataFrame  # one row per file: read, kept, quarantined, filtered, parsed (or from cache, refused)
    filtered: pl.DataFrame  # source_file, reason, rows
    ignored: tuple[str, ...]  # files in the folder that are none of the above
    parts: int  # days


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
    """`combine_landing` read back into memory, page views sorted by user and session start. Without `cache`,
    the parses are kept in a temporary folder.

    With `cache`, each file's parsed and validated rows are kept there under a digest of its content
    (and of the parser's own code), so a file already seen is not parsed again: adding one file to a
    folder of thousands parses one file. Duplicates across files are still found, over all rows.
    `unreadable="quarantine"` turns a file that cannot be read (or lacks a required column) into a
    quarantine row of kind `file` instead of an error, so one bad file does not block the others."""
    with tempfile.TemporaryDirectory(prefix="sessionbert-ingest-") as work:
        work = Path(work)
        targets = Targets(work / "events", work / "quarantine", work / "billing")
        combined = combine_landing(folder, pseudonym_key, cache or work / "cache", targets, unreadable, options)
        return Ingested(kept_order(storage.read_table(targets.events, EVENT_SCHEMA)),
                        storage.read_table(targets.billing, BILLING_SCHEMA),
                        _in_reading_order(storage.read_table(targets.quarantine), combined.files),
                        combined.files, combined.filtered, combined.ignored)


def combine_landing(folder: Path, pseudonym_key: bytes, cache: Path, targets: Targets, unreadable: str = "fail",
                    options: ReadOptions | None = None) -> Combined:
    """Every file of the landing folder parsed (or taken from `cache`), every day combined into `targets`."""
    landing = read_landing(folder, pseudonym_key, cache, unreadable, options)
    days = targets.days()
    days.forget(set(days.days()) - set(landing.days()))
    for day in combine_days(landing, landing.days()):
        days.write(day)
    return landing_tables(landing, days, targets.quarantine)


def landing_tables(landing: Landing, days: DayTables, quarantine_target: Path) -> Combined:
    """Quarantine (what each parse refused, the copies each day found, the files refused whole), with each
    file's `read = kept + quarantined + filtered` checked over the days combined in `days`.

    Raises IngestError naming the days still to combine when a file's valid rows are not all accounted for."""
    missing = sorted(set(landing.days()) - set(days.days()))
    if missing:
        raise IngestError(f"{len(missing)} day(s) of the landing folder are not combined yet: "
                          f"{', '.join(d.isoformat() for d in missing[:10])}"
                          + (" and more" if len(missing) > 10 else "") + ": materialize raw_sessions for them")
    store, parsed = landing.store, landing.parsed
    with storage.PartsWriter(quarantine_target) as quarantine:
        for index, p in enumerate(parsed):  # what the parse refused, file by file
            rows = quarantined_rows(pl.scan_parquet(store.rows_path(p)), "billing" if p.kind == "billing" else "event")
            if (refused := rows.collect()).height:
                quarantine.write(refused, f"a-file-{index:06d}")
        if (copies := days.duplicates().collect()).height:
            quarantine.write(copies, "b-duplicates")
        if landing.rejected:
            quarantine.write(_rejected_files(landing.rejected), "c-refused")
        counts = _file_counts(store, parsed, landing.rejected, days.counts(), landing.filtered)
        _check_conservation(counts)  # before the quarantine is replaced
        kept = counts.group_by(pl.col("kind") == "billing").agg(pl.col("kept").sum())
        rows = dict(zip(kept["kind"].to_list(), kept["kept"].to_list(), strict=True))
        return Combined(events=storage.Parts(days.events, int(rows.get(False, 0))),
                        billing=storage.Parts(days.billing, int(rows.get(True, 0))),
                        quarantine=quarantine.commit(QUARANTINE_SCHEMA), files=counts, filtered=landing.filtered,
                        ignored=landing.ignored, parts=len(storage.day_paths(days.events)))


# ----------------------------------------------------------------------------------------------
# results


def kept_rows(frame, schema: dict):
    """Valid billing rows as BILLING_SCHEMA (a DataFrame or a LazyFrame)."""
    return frame.filter(pl.col("_reason").is_null()).select(
        pl.col("user_id").str.strip_chars(), pl.col("_date").alias("date"), pl.col("service").str.strip_chars(),
        pl.col("_cost").alias("cost")).cast(schema)


def quarantined_rows(frame, kind: str):
    """The rows a rule refused, as QUARANTINE_SCHEMA (a DataFrame or a LazyFrame); a file cut short: kind `file`."""
    file_row = pl.col("_reason").is_in(reading.FILE_REASONS)
    return frame.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("source_file"), pl.col("_line").alias("line"),
        pl.when(file_row).then(pl.lit("file")).otherwise(pl.lit(kind)).alias("kind"),
        pl.col("_reason").alias("reason"), pl.col("_detail").alias("detail"), pl.col("_raw").alias("raw"),
    ).cast(QUARANTINE_SCHEMA)


def _rejected_files(rejected: list[tuple[str, str, str]]) -> pl.DataFrame:
    """One quarantine row per file refused whole: no line, the problem as detail, nothing to show as raw."""
    return pl.DataFrame([{"source_file": name, "line": None, "kind": "file", "reason": "unreadable file",
                          "detail": problem, "raw": ""} for name, _, problem in rejected], schema=QUARANTINE_SCHEMA)


def _in_reading_order(quarantine: pl.DataFrame, files: pl.DataFrame) -> pl.DataFrame:
    """Quarantined rows as the files were read: page-view files, then billing, then refused files; by line."""
    order = files.select("file", _kind=pl.col("kind").replace_strict({"billing": 1}, default=0, return_dtype=pl.Int8),
                         _index=pl.int_range(pl.len()))
    return (quarantine.with_row_index("_row").join(order, left_on="source_file", right_on="file", how="left")
            .with_columns(pl.when((pl.col("kind") == "file") & pl.col("line").is_null()).then(2).otherwise("_kind")
                          .alias("_kind"))
            .sort("_kind", "_index", "line", "_row", nulls_last=True).drop("_row", "_kind", "_index"))


def _file_counts(store: ParseCache, parsed: list[ParsedFile], rejected: list[tuple[str, str, str]],
                 days: pl.DataFrame, filtered: pl.DataFrame) -> pl.DataFrame:
    """Per file: read, kept (over the days combined), quarantined (by its parse or as a duplicate), filtered, and
    whether it was parsed."""
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
        listing.join(counted, on="file", how="left").join(days, on="file", how="left")
        .join(dropped, on="file", how="left")
        .with_columns(pl.col("valid", "refused", "kept", "duplicates", "filtered").fill_null(0).cast(pl.Int64))
        .with_columns(quarantined=pl.col("refused") + pl.col("duplicates"))
        .select("file", "kind", "read", "kept", "quarantined", "filtered", "parsed")
    )


def _check_conservation(files: pl.DataFrame) -> None:
    broken = files.filter(pl.col("read") != pl.col("kept") + pl.col("quarantined") + pl.col("filtered"))
    if broken.height:
        raise AssertionError(f"rows read != kept + quarantined + filtered for: {broken.to_dicts()}")
