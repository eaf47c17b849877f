"""Reading a landing folder, file by file: event, billing and access-log files and exports, classified by
content, parsed and validated alone, with each parse kept by content in a cache.

Every row a file holds is valid, refused by a rule (with line, reason and the raw row kept whole) or
filtered (access logs only: static files, crawlers, failed requests, counted by reason). A file that cannot
be read at all, or lacks a required column, raises `IngestError` naming the file. Nothing is written to the
landing folder. `combine` puts the files together (sessions by gap, duplicates across files).
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, get_args

import polars as pl

from sessionbert_core import storage
from sessionbert_core.config import ReadLimits
from sessionbert_core.data import access_log, event_files, privacy, reading, validate
from sessionbert_core.data.exports import cloudtrail, formats, ga4, mapping, records, segment, snowplow
from sessionbert_core.data.exports.cloudtrail import Callers
from sessionbert_core.data.exports.mapping import TableMapping
from sessionbert_core.data.exports.records import PageViews, Pseudonyms
from sessionbert_core.data.privacy import Pseudonymizer
from sessionbert_core.data.validate import (
    BILLING_COLUMNS,
    EVENT_COLUMNS,
    OPTIONAL_COLUMNS,
    Window,
    error_line,
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
    mapping, privacy, reading))).hexdigest()
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
    """Choices about what to keep of an export (Dagster's IngestConfig sets them), and how much of a file is
    read (`limits`: SESSIONBERT_MAX_FILE_BYTES, SESSIONBERT_MAX_LINE_BYTES)."""

    cloudtrail_callers: Callers = "console"  # console, programmatic or all
    first_day: str = validate.EARLIEST  # the first day partition: a page view before it is quarantined
    limits: ReadLimits = dataclasses.field(default_factory=ReadLimits)  # settings read by the asset, at run time

    def __post_init__(self):
        if self.cloudtrail_callers not in cloudtrail.CALLERS:
            raise ValueError(f"cloudtrail_callers must be one of {', '.join(cloudtrail.CALLERS)}, "
                             f"not {self.cloudtrail_callers!r}")


def discover(folder: Path, pseudonym_key: bytes) -> list[LandingFile]:
    """Every file of the landing folder, classified by its content (`exports.formats`); nothing outside
    it is read. Each file's `name` is its path in the folder pseudonymized (`privacy`: an account id or an
    e-mail address in a path never reaches a partition key, the metadata or the quarantine).

    Hidden files and folders are skipped. A symlink is read only when it resolves to a file inside
    the folder; one that leads outside, a dangling one, a symlinked folder and anything that is not a
    regular file (a FIFO, a socket, a device) are listed as ignored, with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: the landing folder does not exist or is not a folder")
    root = folder.resolve()
    mappings = mapping.load(folder)
    names = Pseudonymizer(pseudonym_key).name
    found = []
    for base, folders, files in os.walk(folder, followlinks=False):
        base = Path(base)
        folders[:] = sorted(d for d in folders if not d.startswith("."))
        for d in folders:
            if (base / d).is_symlink():
                found.append(LandingFile(base / d, "ignored", names(landing_name(base / d, folder)),
                                         "a symlinked folder (not followed)"))
        for name in files:
            if not name.startswith("."):
                f = _classified(base / name, folder, root, mappings)  # mappings match the name as given
                found.append(dataclasses.replace(f, name=names(f.name)))
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


def parse_file(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions = ReadOptions()) -> ParsedFile:
    """One file read and validated row by row (duplicates across files are found later), every text it
    keeps pseudonymized (`privacy`). Whatever goes wrong with the file as a whole comes out as an
    IngestError that names it, never another type, its message pseudonymized too."""
    pseudonyms = Pseudonymizer(pseudonym_key)
    try:
        parsed = _parse_file(f, name, pseudonym_key, options)
    except IngestError as error:
        raise IngestError(pseudonyms.text(str(error))) from None
    except Exception as error:
        raise IngestError(pseudonyms.text(f"{name}: cannot be read: {type(error).__name__}: {error_line(error)}")
                          ) from None
    filtered = pseudonyms.frame(parsed.filtered) if parsed.filtered is not None else None
    return dataclasses.replace(parsed, rows=pseudonyms.frame(parsed.rows), filtered=filtered)


def _parse_file(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions) -> ParsedFile:
    window = Window.at_read(options.first_day)  # a row dated after this reading, or before the first day, waits
    if f.kind in EXPORT_KINDS:
        views = read_export(f, name, pseudonym_key, options)
        return ParsedFile(name, f.kind, validated_events(views.page_views, window), views.read,
                          views.filtered if views.filtered.height else None)
    if f.kind in ("events", "billing"):
        required, optional = (EVENT_COLUMNS, OPTIONAL_COLUMNS) if f.kind == "events" else (BILLING_COLUMNS, ())
        table, read, blank = read_table(f.path, name, required, optional, f.form or None, options.limits)
        rows = (validated_events if f.kind == "events" else validated_billing)(table, window)
        filtered = pl.DataFrame({"source_file": [name], "reason": ["blank line"], "rows": [blank]},
                                schema=access_log.FILTERED_SCHEMA) if blank else None
        return ParsedFile(name, f.kind, rows, read, filtered)
    if f.kind == "access_log":
        log = access_log.read_page_views(f.path, name, pseudonym_key, options.limits)
        return ParsedFile(name, f.kind, validated_events(log.page_views, window), log.lines_read, log.filtered)
    raise ValueError(f"{name}: not an ingestible file ({f.kind})")


def read_export(f: LandingFile, name: str, pseudonym_key: bytes, options: ReadOptions) -> PageViews:
    """An export's records as page views (see `exports`): by its reader, on its bytes or its table. A file cut
    short, corrupt or past the size limit has one row more, of kind `file`, that says so (`reading`)."""
    if f.kind in ("snowplow", "mapped"):
        table, read, blank = read_text_table(f.path, name, f.form, options.limits)
        if set(table.columns) <= set(validate.READ_SCHEMA):  # empty, blank lines only, or cut in its first line
            pseudonyms = Pseudonyms(pseudonym_key)
            rows = pl.concat([pl.DataFrame(schema=records.ROW_SCHEMA),
                              table.with_columns(_raw=pseudonyms.table_raws(table))], how="diagonal_relaxed")
            return records.page_views(rows, name, Counter({"blank line": blank} if blank else {}), read, pseudonyms)
        if f.kind == "mapped":
            return mapping.read(table, name, f.mapping, pseudonym_key, read, blank, f.form)
        return snowplow.read(table, name, pseudonym_key, read, blank)
    reader = reading.FileReader(f.path, name, options.limits)
    data = reader.read()
    views = (cloudtrail.read(data, name, pseudonym_key, options.cloudtrail_callers) if f.kind == "cloudtrail" else
             (segment.read if f.kind == "segment" else ga4.read)(data, name, pseudonym_key))
    if reader.damage is None:
        return views
    cut = reader.cut_line(data.count(b"\n"))  # what there is of its line the format's reader quarantined
    return dataclasses.replace(views, read=views.read + 1, page_views=pl.concat([views.page_views, pl.DataFrame(
        {"_line": [cut.number], "_reason": [cut.reason], "_detail": [cut.detail], "_raw": [""], "_file": [name]})],
        how="diagonal_relaxed"))


@dataclass(frozen=True)
class ParsedFile:
    name: str
    kind: str
    rows: pl.DataFrame  # the file's columns as text plus _file, _line, _reason, _detail, _raw and parsed values
    read: int
    filtered: pl.DataFrame | None  # access logs: rows filtered out, by reason
    key: str = ""  # the cache key it is stored under, "" when not cached
    from_cache: bool = False
    days: tuple[str, ...] = ()  # the UTC days (ISO) its valid page views fall on: which days it feeds


class ParseCache:
    """Parsed files kept under a digest of (parser code, kind, name, content[, pseudonym key])."""

    def __init__(self, folder: Path, pseudonym_key: bytes, options: ReadOptions = ReadOptions()):
        self.folder = folder
        self.pseudonym_key = pseudonym_key
        self.options = options
        self.pseudonym_digest = hashlib.sha256(b"sessionbert-pseudonym:" + pseudonym_key).hexdigest()

    def key(self, f: LandingFile, name: str, content: str) -> str:
        """What the parse depends on: the parser, kind and layout, name, content, the key (every parse is
        pseudonymized), for CloudTrail the callers kept, for a mapped table its mapping."""
        digest = hashlib.sha256()
        for part in (PARSER_VERSION, f.kind, f.form, name, self.pseudonym_digest, content, self.options.first_day,
                     self.options.cloudtrail_callers if f.kind == "cloudtrail" else "", repr(f.mapping),
                     repr(self.options.limits)):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:32]

    def cached(self, f: LandingFile, name: str, content: str | None = None,
               with_rows: bool = True) -> ParsedFile | None:
        """The file's parse as kept in the cache for its present content (its rows only `with_rows`), or None
        when it is not there."""
        key = self.key(f, name, content or content_digest(f.path, name))
        entry = self.folder / key
        if not (entry / "meta.json").exists():
            return None
        meta = json.loads((entry / "meta.json").read_text())
        filtered = pl.read_parquet(entry / "filtered.parquet") if meta["filtered"] else None
        rows = pl.read_parquet(entry / "rows.parquet") if with_rows else pl.DataFrame()
        return ParsedFile(name, f.kind, rows, meta["read"], filtered, key, True, tuple(meta["days"]))

    def parse(self, f: LandingFile, name: str, with_rows: bool = True) -> ParsedFile:
        """The file's parse, from the cache when its content was seen (rows read only `with_rows`)."""
        content = content_digest(f.path, name)
        if found := self.cached(f, name, content, with_rows):
            return found
        key = self.key(f, name, content)
        entry = self.folder / key
        result = parse_file(f, name, self.pseudonym_key, self.options)
        staging = storage.staging_folder(entry)
        storage.write_parquet(result.rows, staging / "rows.parquet")
        if result.filtered is not None:
            storage.write_parquet(result.filtered, staging / "filtered.parquet")
        days = parsed_days(result)
        storage.write_json({"name": name, "kind": f.kind, "sha256": content, "read": result.read,
                            "filtered": result.filtered is not None, "days": days}, staging / "meta.json")
        storage.replace_folder(staging, entry)
        return dataclasses.replace(result, key=key, rows=result.rows if with_rows else pl.DataFrame(),
                                   days=tuple(days))

    def rows_path(self, parsed: ParsedFile) -> Path:
        """Where a cached parse keeps its rows (every column the rules read, `_reason` null when valid)."""
        return self.folder / parsed.key / "rows.parquet"

    def keep_only(self, keys: set[str]) -> None:
        """Forget files no longer in the landing folder (or changed since), so the cache does not grow."""
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                if entry.is_dir() and not entry.name.startswith(".") and entry.name not in keys:
                    shutil.rmtree(entry, ignore_errors=True)


def parsed_days(parsed: ParsedFile) -> list[str]:
    """The UTC days of a parse's valid page views, or of a billing file's valid rows."""
    column = day_of(parsed.kind)
    if column not in parsed.rows.columns:
        return []
    days = parsed.rows.filter(pl.col("_reason").is_null()).select(pl.col(column).cast(pl.Date).unique().sort())
    return [day.isoformat() for day in days.to_series() if day is not None]


def day_of(kind: str) -> str:
    """The parsed column whose date is a row's day: the page view's time, or the billing row's date."""
    return "_date" if kind == "billing" else "_ts"


def _cached_records(folder: Path) -> Iterator[tuple[Path, dict]]:
    """Each cached parse's folder and its meta.json record."""
    for meta in sorted(Path(folder).glob("*/meta.json")):
        yield meta.parent, json.loads(meta.read_text())


def cached_days(folder: Path, names: set[str] | None = None) -> list[date]:
    """The days the cached parses hold (of the files `names` only, where given), in order."""
    days = {day for _, record in _cached_records(folder) if names is None or record.get("name") in names
            for day in record.get("days", [])}
    return sorted(date.fromisoformat(day) for day in days)


def cached_files(folder: Path) -> set[tuple[str, str]]:
    """(name, content digest) of every file a cached ingest has already read from the landing folder."""
    return {(record["name"], record["sha256"]) for _, record in _cached_records(folder) if "sha256" in record}


def cached_outcome(folder: Path, name: str, digest: str) -> dict | None:
    """Where the rows of one cached parse went (read, valid, quarantined, filtered), counted from its stored
    rows, for the file `name` with content `digest`; None when no parse of that content is cached."""
    for entry, meta in _cached_records(folder):
        if (meta.get("name"), meta.get("sha256")) != (name, digest):
            continue
        reasons = pl.scan_parquet(entry / "rows.parquet").select(
            valid=pl.col("_reason").is_null().sum(), quarantined=pl.col("_reason").is_not_null().sum()).collect()
        filtered = (pl.scan_parquet(entry / "filtered.parquet").select(pl.col("rows").sum()).collect()
                    .item() if meta["filtered"] else 0)
        return {"read": meta["read"], "valid": int(reasons["valid"][0]),
                "quarantined": int(reasons["quarantined"][0]), "filtered": int(filtered or 0)}
    return None


def content_digest(path: Path, name: str = "") -> str:
    """SHA-256 of a file's bytes, read in blocks; an IngestError naming the file (`name`) where it cannot be."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise IngestError(f"{name or path.name}: cannot be read: {error.strerror or error}") from None
