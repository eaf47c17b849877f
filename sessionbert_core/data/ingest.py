"""Ingestion of a landing folder: event, billing and access-log files to page views, with quarantine.

Every row read ends in exactly one place: kept, quarantined (with file, line and reason, the raw row
kept whole) or filtered (access logs only: static files, crawlers, failed requests, counted by
reason), so `read = kept + quarantined + filtered` holds for every file. A file that cannot be read
at all, or lacks a required column, raises `IngestError` naming the file. Nothing is written to the
landing folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data import access_log, event_files, validate
from sessionbert_core.data.access_log import sessions_by_gap
from sessionbert_core.data.event_files import file_bytes
from sessionbert_core.data.exports import cloudtrail, formats, ga4, mapping, records, segment, snowplow
from sessionbert_core.data.exports.cloudtrail import Callers
from sessionbert_core.data.exports.mapping import TableMapping
from sessionbert_core.data.exports.records import PageViews, Pseudonyms
from sessionbert_core.data.validate import (
    BILLING_COLUMNS,
    BILLING_SCHEMA,
    EVENT_COLUMNS,
    OPTIONAL_COLUMNS,
    QUARANTINE_SCHEMA,
    error_line,
    kept_events,
    quarantine_duplicates,
    read_table,
    read_text_table,
    validated_billing,
    validated_events,
)
from sessionbert_core.errors import IngestError

UnreadableFiles = Literal["fail", "quarantine"]
UNREADABLE_MODES: tuple[str, ...] = get_args(UnreadableFiles)
# the parser's own code: a change to it invalidates every cached parse
PARSER_VERSION = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (
    sys.modules[__name__], access_log, validate, event_files, formats, records, cloudtrail, snowplow, segment, ga4,
    mapping))).hexdigest()
EXPORT_KINDS = ("cloudtrail", "snowplow", "segment", "ga4", "mapped")
PAGE_VIEW_KINDS = ("events", "access_log", *EXPORT_KINDS)  # what gives page views (billing files do not)


@dataclass(frozen=True)
class LandingFile:
    path: Path
    kind: str  # events, billing, access_log, an export (EXPORT_KINDS), mapping (landing.yaml) or ignored
    name: str = ""  # its path in the landing folder, as text (bytes that are not UTF-8 as backslash escapes)
    reason: str = ""  # why an ignored file is not read
    form: str = ""  # parquet, csv, jsonl, json or log: how its content is laid out
    mapping: TableMapping | None = None  # a mapped table's mapping in landing.yaml


@dataclass(frozen=True)
class ReadOptions:
    """Choices about what to keep of an export (Dagster's IngestConfig sets them)."""

    cloudtrail_callers: Callers = "console"  # console, programmatic or all

    def __post_init__(self):
        if self.cloudtrail_callers not in cloudtrail.CALLERS:
            raise ValueError(f"cloudtrail_callers must be one of {', '.join(cloudtrail.CALLERS)}, "
                             f"not {self.cloudtrail_callers!r}")


@dataclass(frozen=True)
class Ingested:
    events: pl.DataFrame  # EVENT_SCHEMA, sorted by user, session start, time
    billing: pl.DataFrame  # BILLING_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    files: pl.DataFrame  # one row per file: read, kept, quarantined, filtered
    filtered: pl.DataFrame  # source_file, reason, rows
    ignored: tuple[str, ...]  # files in the folder that are none of the above


def discover(folder: Path) -> list[LandingFile]:
    """Every file of the landing folder, classified by its content (`exports.formats`); nothing outside
    it is read.

    Hidden files and folders are skipped. A symlink is read only when it resolves to a file inside
    the folder; one that leads outside, a dangling one, a symlinked folder and anything that is not a
    regular file (a FIFO, a socket, a device) are listed as ignored, with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: the landing folder does not exist or is not a folder")
    root = folder.resolve()
    mappings = mapping.load(folder)
    found = []
    for base, folders, names in os.walk(folder, followlinks=False):
        base = Path(base)
        folders[:] = sorted(d for d in folders if not d.startswith("."))
        for d in folders:
            if (base / d).is_symlink():
                found.append(LandingFile(base / d, "ignored", landing_name(base / d, folder),
                                         "a symlinked folder (not followed)"))
        for name in names:
            if not name.startswith("."):
                found.append(_classified(base / name, folder, root, mappings))
    return sorted(found, key=lambda f: f.name)


def landing_name(path: Path, folder: Path) -> str:
    """The path inside the landing folder as text: a name that is not UTF-8 keeps its bytes as escapes."""
    return os.fsencode(path.relative_to(folder)).decode("utf-8", "backslashreplace")


def _classified(path: Path, folder: Path, root: Path, mappings: tuple[TableMapping, ...]) -> LandingFile:
    name = landing_name(path, folder)
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return LandingFile(path, "ignored", name, "a dangling symlink")
        if not target.is_relative_to(root):
            return LandingFile(path, "ignored", name, "a symlink to outside the landing folder (not read)")
    if not stat.S_ISREG(path.stat().st_mode):
        return LandingFile(path, "ignored", name, "not a regular file (a FIFO, socket or device)")
    if name == mapping.FILE_NAME:
        return LandingFile(path, "mapping", name, form="yaml")
    found = formats.recognize(path, name, mappings)
    return LandingFile(path, found.kind, name, found.reason, found.form, found.mapping)


def ingest_landing(folder: Path, pseudonym_key: bytes, cache: Path | None = None,
                   unreadable: str = "fail", options: ReadOptions = ReadOptions()) -> Ingested:
    """Read every file of the landing folder; see the module docstring for the guarantees.

    With `cache`, each file's parsed and validated rows are kept there under a digest of its content
    (and of the parser's own code), so a file already seen is not parsed again: adding one file to a
    folder of thousands parses one file. Duplicates across files are still found, over all rows.
    `unreadable="quarantine"` turns a file that cannot be read (or lacks a required column) into a
    quarantine row of kind `file` instead of an error, so one bad file does not block the others.
    """
    if unreadable not in UNREADABLE_MODES:
        raise ValueError(f"unreadable must be one of {', '.join(UNREADABLE_MODES)}, not {unreadable!r}")
    folder = Path(folder)
    found = discover(folder)
    files = [f for f in found if f.kind not in ("ignored", "mapping")]
    ignored = tuple(f"{f.name} ({f.reason})" for f in found if f.kind == "ignored")
    if not any(f.kind in PAGE_VIEW_KINDS for f in files):
        raise IngestError(f"{folder}: no event files, access logs or exports (CloudTrail, Snowplow, Segment, "
                          "RudderStack, GA4, or a table mapped in landing.yaml)")
    store = ParseCache(Path(cache), pseudonym_key, options) if cache is not None else None
    parsed, rejected = [], []
    for f in files:
        name = f.name
        try:
            parsed.append(store.parse(f, name) if store else parse_file(f, name, pseudonym_key, options))
        except IngestError as error:
            if unreadable == "fail":
                raise
            rejected.append((name, f.kind, str(error)))
    if store:
        store.keep_only({p.key for p in parsed})
    event_parts = [p.rows for p in parsed if p.kind != "billing"]
    if not event_parts:
        raise IngestError(f"{folder}: no event file or access log could be read: "
                          + "; ".join(problem for _, _, problem in rejected))
    billing_parts = [p.rows for p in parsed if p.kind == "billing"]
    # sessions by gap and repeated ids across files, once every file is read (a session or an id may span two)
    events = quarantine_duplicates(sessions_by_gap(pl.concat(event_parts, how="diagonal_relaxed")))
    billing = pl.concat(billing_parts, how="diagonal_relaxed") if billing_parts else None
    filtered = [p.filtered for p in parsed if p.filtered is not None]
    filtered_df = pl.concat(filtered) if filtered else pl.DataFrame(schema=access_log.FILTERED_SCHEMA)
    ingested = Ingested(
        events=kept_events(events),
        billing=kept_rows(billing, BILLING_SCHEMA),
        quarantine=pl.concat([quarantined_rows(events, "event"), quarantined_rows(billing, "billing"),
                              _rejected_files(rejected)]),
        files=_file_counts(parsed, rejected, events, billing, filtered_df),
        filtered=filtered_df,
        ignored=ignored,
    )
    _check_conservation(ingested.files)
    return ingested


def parse_file(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions = ReadOptions()) -> ParsedFile:
    """One file read and validated row by row (duplicates across files are found later). Whatever goes
    wrong with the file as a whole comes out as an IngestError that names it, never another type."""
    try:
        return _parse_file(f, name, pseudonym_key, options)
    except IngestError:
        raise
    except Exception as error:
        raise IngestError(f"{name}: cannot be read: {type(error).__name__}: {error_line(error)}") from error


def _parse_file(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions) -> ParsedFile:
    if f.kind in EXPORT_KINDS:
        views = read_export(f, name, pseudonym_key, options)
        return ParsedFile(name, f.kind, validated_events(views.page_views), views.read,
                          views.filtered if views.filtered.height else None)
    if f.kind in ("events", "billing"):
        required, optional = (EVENT_COLUMNS, OPTIONAL_COLUMNS) if f.kind == "events" else (BILLING_COLUMNS, ())
        table, read, blank = read_table(f.path, name, required, optional, f.form or None)
        rows = validated_events(table) if f.kind == "events" else validated_billing(table)
        filtered = pl.DataFrame({"source_file": [name], "reason": ["blank line"], "rows": [blank]},
                                schema=access_log.FILTERED_SCHEMA) if blank else None
        return ParsedFile(name, f.kind, rows, read, filtered)
    if f.kind == "access_log":
        log = access_log.read_page_views(f.path, name, pseudonym_key)
        return ParsedFile(name, f.kind, validated_events(log.page_views), log.lines_read, log.filtered)
    raise ValueError(f"{name}: not an ingestible file ({f.kind})")


def read_export(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions) -> PageViews:
    """An export's records as page views (see `exports`): by its reader, on its bytes or its table."""
    if f.kind in ("snowplow", "mapped"):
        if f.path.stat().st_size == 0:
            return records.page_views([], name, Counter(), 0, Pseudonyms(pseudonym_key))
        table, read, blank = read_text_table(f.path, name, f.form)
        if f.kind == "mapped":
            return mapping.read(table, name, f.mapping, pseudonym_key, read, blank, f.form)
        return snowplow.read(table, name, pseudonym_key, read, blank)
    data = file_bytes(f.path)
    if f.kind == "cloudtrail":
        return cloudtrail.read(data, name, pseudonym_key, options.cloudtrail_callers)
    return (segment.read if f.kind == "segment" else ga4.read)(data, name, pseudonym_key)


@dataclass(frozen=True)
class ParsedFile:
    name: str
    kind: str
    rows: pl.DataFrame  # the file's columns as text plus _file, _line, _reason, _detail, _raw and parsed values
    read: int
    filtered: pl.DataFrame | None  # access logs: rows filtered out, by reason
    key: str = ""  # the cache key it is stored under, "" when not cached
    from_cache: bool = False


class ParseCache:
    """Parsed files kept under a digest of (parser code, kind, name, content[, pseudonym key])."""

    def __init__(self, folder: Path, pseudonym_key: bytes, options: ReadOptions = ReadOptions()):
        self.folder = folder
        self.pseudonym_key = pseudonym_key
        self.options = options
        self.pseudonym_digest = hashlib.sha256(b"sessionbert-pseudonym:" + pseudonym_key).hexdigest()

    def key(self, f: LandingFile, name: str, content: str) -> str:
        """What the parse depends on: the parser, kind and layout, name, content, and for what pseudonymizes
        the key, for CloudTrail the callers kept, for a mapped table its mapping."""
        pseudonymized = f.kind == "access_log" or f.kind in EXPORT_KINDS
        digest = hashlib.sha256()
        for part in (PARSER_VERSION, f.kind, f.form, name, self.pseudonym_digest if pseudonymized else "", content,
                     self.options.cloudtrail_callers if f.kind == "cloudtrail" else "", repr(f.mapping)):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:32]

    def cached(self, f: LandingFile, name: str, content: str | None = None) -> ParsedFile | None:
        """The file's parse as kept in the cache for its present content, or None when it is not there."""
        key = self.key(f, name, content or content_digest(f.path))
        entry = self.folder / key
        if not (entry / "meta.json").exists():
            return None
        meta = json.loads((entry / "meta.json").read_text())
        filtered = pl.read_parquet(entry / "filtered.parquet") if meta["filtered"] else None
        return ParsedFile(name, f.kind, pl.read_parquet(entry / "rows.parquet"), meta["read"], filtered, key, True)

    def parse(self, f: LandingFile, name: str) -> ParsedFile:
        content = content_digest(f.path)
        if found := self.cached(f, name, content):
            return found
        key = self.key(f, name, content)
        entry = self.folder / key
        result = parse_file(f, name, self.pseudonym_key, self.options)
        staging = storage.staging_folder(entry)
        storage.write_parquet(result.rows, staging / "rows.parquet")
        if result.filtered is not None:
            storage.write_parquet(result.filtered, staging / "filtered.parquet")
        storage.write_json({"name": name, "kind": f.kind, "sha256": content, "read": result.read,
                            "filtered": result.filtered is not None}, staging / "meta.json")
        storage.replace_folder(staging, entry)
        return dataclasses.replace(result, key=key)

    def keep_only(self, keys: set[str]) -> None:
        """Forget files no longer in the landing folder (or changed since), so the cache does not grow."""
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                if entry.is_dir() and not entry.name.startswith(".") and entry.name not in keys:
                    shutil.rmtree(entry, ignore_errors=True)


def cached_files(folder: Path) -> set[tuple[str, str]]:
    """(name, content digest) of every file a cached ingest has already read from the landing folder."""
    found = set()
    for meta in Path(folder).glob("*/meta.json"):
        record = json.loads(meta.read_text())
        if "sha256" in record:
            found.add((record["name"], record["sha256"]))
    return found


def cached_outcome(folder: Path, name: str, digest: str) -> dict | None:
    """Where the rows of one cached parse went (read, valid, quarantined, filtered), counted from its stored
    rows, for the file `name` with content `digest`; None when no parse of that content is cached."""
    for meta_path in sorted(Path(folder).glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if (meta.get("name"), meta.get("sha256")) != (name, digest):
            continue
        reasons = pl.scan_parquet(meta_path.parent / "rows.parquet").select(
            valid=pl.col("_reason").is_null().sum(), quarantined=pl.col("_reason").is_not_null().sum()).collect()
        filtered = (pl.scan_parquet(meta_path.parent / "filtered.parquet").select(pl.col("rows").sum()).collect()
                    .item() if meta["filtered"] else 0)
        return {"read": meta["read"], "valid": int(reasons["valid"][0]),
                "quarantined": int(reasons["quarantined"][0]), "filtered": int(filtered or 0)}
    return None


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ----------------------------------------------------------------------------------------------
# results


def kept_rows(frame: pl.DataFrame | None, schema: dict) -> pl.DataFrame:
    if frame is None:
        return pl.DataFrame(schema=schema)
    return frame.filter(pl.col("_reason").is_null()).select(
        pl.col("user_id").str.strip_chars(), pl.col("_date").alias("date"), pl.col("service").str.strip_chars(),
        pl.col("_cost").alias("cost")).cast(schema)


def quarantined_rows(frame: pl.DataFrame | None, kind: str) -> pl.DataFrame:
    if frame is None:
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
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


def _file_counts(parsed: list[ParsedFile], rejected: list[tuple[str, str, str]], events: pl.DataFrame,
                 billing: pl.DataFrame | None, filtered: pl.DataFrame) -> pl.DataFrame:
    outcomes = pl.concat([events.select("_file", "_reason"),
                          *([billing.select("_file", "_reason")] if billing is not None else [])])
    counted = outcomes.group_by("_file").agg(kept=pl.col("_reason").is_null().sum(),
                                             quarantined=pl.col("_reason").is_not_null().sum())
    dropped = filtered.group_by("source_file").agg(filtered=pl.col("rows").sum()).rename({"source_file": "_file"})
    listing = pl.DataFrame(
        {"_file": [p.name for p in parsed] + [n for n, _, _ in rejected],
         "kind": [p.kind for p in parsed] + [k for _, k, _ in rejected],
         "read": [p.read for p in parsed] + [0] * len(rejected),
         "parsed": ["from cache" if p.from_cache else "parsed" for p in parsed] + ["refused"] * len(rejected)},
        schema={"_file": pl.String, "kind": pl.String, "read": pl.Int64, "parsed": pl.String})
    return (
        listing.join(counted, on="_file", how="left").join(dropped, on="_file", how="left")
        .with_columns(pl.col("kept", "quarantined", "filtered").fill_null(0).cast(pl.Int64))
        .rename({"_file": "file"})
        .select("file", "kind", "read", "kept", "quarantined", "filtered", "parsed")
    )


def _check_conservation(files: pl.DataFrame) -> None:
    broken = files.filter(pl.col("read") != pl.col("kept") + pl.col("quarantined") + pl.col("filtered"))
    if broken.height:
        raise AssertionError(f"rows read != kept + quarantined + filtered for: {broken.to_dicts()}")
