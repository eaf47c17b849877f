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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import polars as pl

from sessionbert_core import access_log, event_files, storage
from sessionbert_core.config import TIERS
from sessionbert_core.errors import IngestError

EVENT_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page")
OPTIONAL_COLUMNS = ("country", "city", "billing_tier")
BILLING_COLUMNS = ("user_id", "date", "service", "cost")
EVENT_SUFFIXES = (".parquet", ".csv", ".jsonl")
MAX_CHARS = 512
# control (Cc: C0 and C1), format (Cf: bidi overrides, zero-width marks) and line/paragraph separators
CONTROL_CHARS = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
UnreadableFiles = Literal["fail", "quarantine"]
UNREADABLE_MODES: tuple[str, ...] = get_args(UnreadableFiles)
# the parser's own code: a change to it invalidates every cached parse
PARSER_VERSION = hashlib.sha256(Path(__file__).read_bytes() + Path(access_log.__file__).read_bytes()).hexdigest()
EARLIEST, LATEST = "1990-01-01", "2100-01-01"
_TIER_BY_KEY = {t.lower().replace(" ", ""): t for t in TIERS}
_TIER_KEY = pl.col("billing_tier").str.to_lowercase().str.replace_all(r"[\s_-]", "")  # "very_high" -> "veryhigh"

QUARANTINE_SCHEMA = {"source_file": pl.String, "line": pl.Int64, "kind": pl.String, "reason": pl.String,
                     "detail": pl.String, "raw": pl.String}
EVENT_SCHEMA = {"user_id": pl.String, "session_id": pl.String, "timestamp": pl.Datetime("us", "UTC"),
                "service": pl.String, "page": pl.String, "country": pl.String, "city": pl.String,
                "billing_tier": pl.String}
BILLING_SCHEMA = {"user_id": pl.String, "date": pl.Date, "service": pl.String, "cost": pl.Float64}


@dataclass(frozen=True)
class LandingFile:
    path: Path
    kind: str  # events, billing, access_log or ignored
    name: str = ""  # its path in the landing folder, as text (bytes that are not UTF-8 as backslash escapes)
    reason: str = ""  # why an ignored file is not read


@dataclass(frozen=True)
class Ingested:
    events: pl.DataFrame  # EVENT_SCHEMA, sorted by user, session start, time
    billing: pl.DataFrame  # BILLING_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    files: pl.DataFrame  # one row per file: read, kept, quarantined, filtered
    filtered: pl.DataFrame  # source_file, reason, rows
    ignored: tuple[str, ...]  # files in the folder that are none of the above


def discover(folder: Path) -> list[LandingFile]:
    """Every file of the landing folder, classified by name; nothing outside it is read.

    Hidden files and folders are skipped. A symlink is read only when it resolves to a file inside
    the folder; one that leads outside, a dangling one, a symlinked folder and anything that is not a
    regular file (a FIFO, a socket, a device) are listed as ignored, with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: the landing folder does not exist or is not a folder")
    root = folder.resolve()
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
                found.append(_classified(base / name, folder, root))
    return sorted(found, key=lambda f: f.name)


def landing_name(path: Path, folder: Path) -> str:
    """The path inside the landing folder as text: a name that is not UTF-8 keeps its bytes as escapes."""
    return os.fsencode(path.relative_to(folder)).decode("utf-8", "backslashreplace")


def _classified(path: Path, folder: Path, root: Path) -> LandingFile:
    name = landing_name(path, folder)
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return LandingFile(path, "ignored", name, "a dangling symlink")
        if not target.is_relative_to(root):
            return LandingFile(path, "ignored", name, "a symlink to outside the landing folder (not read)")
    if not stat.S_ISREG(path.stat().st_mode):
        return LandingFile(path, "ignored", name, "not a regular file (a FIFO, socket or device)")
    lower = path.name.lower()
    if lower.endswith((".log", ".log.gz")):
        return LandingFile(path, "access_log", name)
    if lower.startswith("billing") and lower.endswith(EVENT_SUFFIXES):
        return LandingFile(path, "billing", name)
    if lower.endswith(EVENT_SUFFIXES):
        return LandingFile(path, "events", name)
    return LandingFile(path, "ignored", name, "not an event file, billing file or access log")


def ingest_landing(folder: Path, pseudonym_key: bytes, cache: Path | None = None,
                   unreadable: str = "fail") -> Ingested:
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
    files = [f for f in found if f.kind != "ignored"]
    ignored = tuple(f"{f.name} ({f.reason})" for f in found if f.kind == "ignored")
    if not any(f.kind in ("events", "access_log") for f in files):
        raise IngestError(f"{folder}: no event files (*.parquet, *.csv, *.jsonl) or access logs (*.log, *.log.gz)")
    store = ParseCache(Path(cache), pseudonym_key) if cache is not None else None
    parsed, rejected = [], []
    for f in files:
        name = f.name
        try:
            parsed.append(store.parse(f, name) if store else parse_file(f, name, pseudonym_key))
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
    events = _quarantine_duplicates(pl.concat(event_parts, how="diagonal_relaxed"))
    billing = pl.concat(billing_parts, how="diagonal_relaxed") if billing_parts else None
    filtered = [p.filtered for p in parsed if p.filtered is not None]
    filtered_df = pl.concat(filtered) if filtered else pl.DataFrame(schema=access_log.FILTERED_SCHEMA)
    ingested = Ingested(
        events=_kept_events(events),
        billing=_kept(billing, BILLING_SCHEMA),
        quarantine=pl.concat([_quarantined(events, "event"), _quarantined(billing, "billing"),
                              _rejected_files(rejected)]),
        files=_file_counts(parsed, rejected, events, billing, filtered_df),
        filtered=filtered_df,
        ignored=ignored,
    )
    _check_conservation(ingested.files)
    return ingested


def parse_file(f: LandingFile, name: str, pseudonym_key: bytes) -> ParsedFile:
    """One file read and validated row by row (duplicates across files are found later). Whatever goes
    wrong with the file as a whole comes out as an IngestError that names it, never another type."""
    try:
        return _parse_file(f, name, pseudonym_key)
    except IngestError:
        raise
    except Exception as error:
        raise IngestError(f"{name}: cannot be read: {type(error).__name__}: {_first_line(error)}") from error


def _parse_file(f: LandingFile, name: str, pseudonym_key: bytes) -> ParsedFile:
    if f.kind in ("events", "billing"):
        required, optional = (EVENT_COLUMNS, OPTIONAL_COLUMNS) if f.kind == "events" else (BILLING_COLUMNS, ())
        table, read, blank = _read_table(f.path, name, required, optional)
        rows = _validated_events(table) if f.kind == "events" else _validated_billing(table)
        filtered = pl.DataFrame({"source_file": [name], "reason": ["blank line"], "rows": [blank]},
                                schema=access_log.FILTERED_SCHEMA) if blank else None
        return ParsedFile(name, f.kind, rows, read, filtered)
    if f.kind == "access_log":
        log = access_log.read_page_views(f.path, name, pseudonym_key)
        return ParsedFile(name, f.kind, _validated_events(log.page_views), log.lines_read, log.filtered)
    raise ValueError(f"{name}: not an ingestible file ({f.kind})")


def probe(path: Path, name: str, kind: str) -> str | None:
    """A cheap look at a file's header: the problem that would make ingestion refuse it, or None.

    It reads the schema (Parquet), the header line (CSV), the first lines (JSON lines) or the first
    line (access logs), never the whole file, so a watcher can call it on every new file.
    """
    required, optional = (BILLING_COLUMNS, ()) if kind == "billing" else (EVENT_COLUMNS, OPTIONAL_COLUMNS)
    suffix = path.suffix.lower()
    try:
        if kind == "access_log":
            access_log.first_line(path)
            return None
        if path.stat().st_size == 0:
            return None  # read as no rows
        if suffix == ".parquet":
            schema = pl.read_parquet_schema(path)
            problem = schema_problem(name, pl.Schema(schema), required, optional)
            if problem:
                return problem
            columns = list(schema)
        elif suffix == ".csv":
            with path.open("rb") as handle:
                header = event_files.csv_header(handle.readline(), name)
            columns = header
        else:
            return None  # a JSON-lines file is read line by line: its bad lines are quarantined, never the file
    except IngestError as error:
        return str(error)
    except Exception as error:  # polars/pyarrow/gzip raise many types for a corrupt file
        return f"{name}: cannot be read as {suffix[1:].upper() or kind}: {_first_line(error)}"
    missing = [c for c in required if c not in columns]
    if missing:
        found = ", ".join(columns) or "none"
        return f"{name}: missing required column(s) {', '.join(missing)} (columns found: {found})"
    return None


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

    def __init__(self, folder: Path, pseudonym_key: bytes):
        self.folder = folder
        self.pseudonym_key = pseudonym_key
        self.pseudonym_digest = hashlib.sha256(b"sessionbert-pseudonym:" + pseudonym_key).hexdigest()

    def key(self, f: LandingFile, name: str, content: str) -> str:
        digest = hashlib.sha256()
        for part in (PARSER_VERSION, f.kind, name, self.pseudonym_digest if f.kind == "access_log" else "", content):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:32]

    def parse(self, f: LandingFile, name: str) -> ParsedFile:
        content = content_digest(f.path)
        key = self.key(f, name, content)
        entry = self.folder / key
        if (entry / "meta.json").exists():
            meta = json.loads((entry / "meta.json").read_text())
            filtered = pl.read_parquet(entry / "filtered.parquet") if meta["filtered"] else None
            return ParsedFile(name, f.kind, pl.read_parquet(entry / "rows.parquet"), meta["read"], filtered, key, True)
        result = parse_file(f, name, self.pseudonym_key)
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


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ----------------------------------------------------------------------------------------------
# reading: every file becomes string columns plus _file, _line, _raw (all the user's columns) and _reason


def _read_table(path: Path, name: str, required: tuple[str, ...],
                optional: tuple[str, ...]) -> tuple[pl.DataFrame, int, int]:
    """The file as text columns plus _file, _line, _reason, _detail and _raw; records read and blank lines."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:  # an empty file of any kind holds no rows (and is listed as such)
        return _empty_table(name, required, optional), 0, 0
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
            problem = schema_problem(name, frame.schema, required, optional)
            if problem:
                raise IngestError(problem)
            frame = frame.with_columns(_line=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
                                       _reason=_type_reasons(frame.schema), _detail=pl.lit(None, pl.String))
            read, blank = frame.height, 0
        else:
            records = event_files.read_csv(path, name) if suffix == ".csv" else event_files.read_jsonl(path)
            frame, read, blank = records.frame, records.read, records.blank
    except IngestError:
        raise
    except Exception as error:  # polars/pyarrow raise many types for a corrupt file
        raise IngestError(f"{name}: cannot be read as {suffix[1:].upper()}: {_first_line(error)}") from error
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(c for c in frame.columns if not c.startswith("_")) or "none"
        raise IngestError(f"{name}: missing required column(s) {', '.join(missing)} (columns found: {found})")
    columns = [c for c in (*required, *optional) if c in frame.columns]
    given = [c for c in frame.columns if not c.startswith("_")]  # every column the user gave, for the raw row
    raw = pl.struct([_as_string(c, frame[c].dtype, raw=True) for c in given]).struct.json_encode()
    typed = [c for c in ("timestamp", "date") if c in columns and frame[c].dtype != pl.String]
    table = frame.select(
        *[_as_string(c, frame[c].dtype) for c in columns],
        *[pl.col(c).alias(f"_typed_{c}") for c in typed],
        "_line", "_reason", "_detail",
        _file=pl.lit(name),
        _raw=pl.coalesce(pl.col("_raw_line"), raw) if "_raw_line" in frame.columns else raw,
    )
    return table, read, blank


def _empty_table(name: str, required: tuple[str, ...], optional: tuple[str, ...]) -> pl.DataFrame:
    schema = {c: pl.String for c in (*required, *optional)} | {"_line": pl.Int64, "_reason": pl.String,
                                                                "_detail": pl.String, "_file": pl.String,
                                                                "_raw": pl.String}
    return pl.DataFrame(schema=schema)


TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum, pl.Null)


def schema_problem(name: str, schema: pl.Schema, required: tuple[str, ...], optional: tuple[str, ...]) -> str | None:
    """Why a table's column types cannot hold what the contract asks of them (a list-typed page, a
    duration for a time), or None. The probe asks the same question of a file's schema alone."""
    for column in (c for c in (*required, *optional) if c in schema):
        dtype = schema[column]
        if column in ("timestamp", "date"):
            fine = isinstance(dtype, (*TEXT_TYPES, pl.Datetime, pl.Date)) or dtype.is_numeric()
            expected = "ISO-8601 text, epoch seconds, a date or a datetime"
        elif column == "cost":
            fine = isinstance(dtype, TEXT_TYPES) or dtype.is_numeric()
            expected = "a number"
        else:
            fine = isinstance(dtype, (*TEXT_TYPES, pl.Binary, pl.Boolean)) or dtype.is_numeric()
            expected = "text"
        if not fine:
            return f"{name}: column `{column}` holds {dtype}, not {expected}"
    return None


def _type_reasons(schema: pl.Schema) -> pl.Expr:
    """Every row's reason when an identifier column is typed as no identifier can be (a float, NaN, a bool)."""
    for column in ("user_id", "session_id"):
        dtype = schema.get(column)
        if dtype is not None and (dtype.is_float() or dtype == pl.Boolean):
            kind = "true/false" if dtype == pl.Boolean else "a floating-point number"
            return pl.when(pl.col(column).is_not_null()).then(pl.lit(f"{column} is {kind}, not an identifier"))
    return pl.lit(None, pl.String)


def _as_string(column: str, dtype: pl.DataType, raw: bool = False) -> pl.Expr:
    """A column as text: datetimes in ISO-8601, bytes decoded (invalid UTF-8 as U+FFFD, which validation
    quarantines; in the raw row as backslash escapes, untouched), nested values as JSON."""
    value = pl.col(column)
    if dtype == pl.String:
        return value
    if isinstance(dtype, pl.Datetime):
        return value.dt.to_string("iso").alias(column)
    if dtype == pl.Binary:
        errors = "backslashreplace" if raw else "replace"
        return value.map_elements(lambda b: b.decode("utf-8", errors), return_dtype=pl.String).alias(column)
    if dtype.is_nested() or isinstance(dtype, pl.Object):
        return value.map_elements(lambda v: json.dumps(v, default=str), return_dtype=pl.String,
                                  skip_nulls=True).alias(column)
    return value.cast(pl.String, strict=False).alias(column)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


# ----------------------------------------------------------------------------------------------
# validation: the first rule a row breaks becomes its reason


def _parsed_timestamp(frame: pl.DataFrame) -> pl.Expr:
    if "_typed_timestamp" in frame.columns:
        dtype = frame["_typed_timestamp"].dtype
        typed = pl.col("_typed_timestamp")
        if isinstance(dtype, pl.Datetime):
            return (typed.dt.convert_time_zone("UTC") if dtype.time_zone else typed.dt.replace_time_zone("UTC")
                    ).dt.cast_time_unit("us")
        if dtype.is_numeric():
            return pl.from_epoch((typed.cast(pl.Float64) * 1e6).round().cast(pl.Int64, strict=False),
                                 time_unit="us").dt.replace_time_zone("UTC")
    return parse_timestamp(pl.col("timestamp"))


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO-8601 (with or without offset; naive means UTC) or epoch seconds, to UTC microseconds."""
    t = text.str.strip_chars().str.replace(" ", "T")
    formats = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]
    attempts = [t.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
                .dt.convert_time_zone("UTC")]
    attempts += [t.str.to_datetime(format=f, strict=False, time_unit="us").dt.replace_time_zone("UTC")
                 for f in formats]
    is_number = t.str.contains(r"^-?\d+(\.\d+)?$")
    epoch = pl.when(is_number).then(
        pl.from_epoch((t.cast(pl.Float64, strict=False) * 1e6).round().cast(pl.Int64, strict=False),
                      time_unit="us").dt.replace_time_zone("UTC"))
    return pl.coalesce(*attempts, epoch)


def _text_problems(frame: pl.DataFrame, required: tuple[str, ...], optional: tuple[str, ...]) -> list:
    rules = []
    for c in required:
        rules.append((pl.col(c).is_null() | (pl.col(c).str.strip_chars() == ""), f"missing {c}", pl.lit(None)))
    for c in (*required, *optional):
        if c not in frame.columns:
            continue
        rules.append((pl.col(c).str.contains("\ufffd", literal=True), f"invalid UTF-8 in {c}", pl.lit(None)))
        rules.append((pl.col(c).str.contains(CONTROL_CHARS), f"control character in {c}",
                      pl.col(c).str.extract(f"({CONTROL_CHARS})").map_elements(repr, return_dtype=pl.String)))
        rules.append((pl.col(c).str.len_chars() > MAX_CHARS, f"{c} longer than {MAX_CHARS} characters",
                      pl.format("{} characters", pl.col(c).str.len_chars())))
    return rules


def _first_reason(frame: pl.DataFrame, rules: list) -> pl.DataFrame:
    """Set `_reason` (a fixed category) and `_detail` to the first rule the row breaks; a reading problem wins."""
    reason = pl.when(pl.col("_reason").is_not_null()).then(pl.col("_reason"))
    detail = pl.when(pl.col("_reason").is_not_null()).then(pl.col("_detail"))
    for condition, text, value in rules:
        reason = reason.when(condition.fill_null(False)).then(pl.lit(text))
        detail = detail.when(condition.fill_null(False)).then(value)
    if "_detail" not in frame.columns:
        frame = frame.with_columns(_detail=pl.lit(None, pl.String))
    return frame.with_columns(_reason=reason.otherwise(None), _detail=detail.otherwise(None).cast(pl.String))


def _stripped(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """Values without surrounding whitespace before any rule or duplicate check (the raw row keeps them)."""
    return frame.with_columns(pl.col(c).str.strip_chars() for c in columns if c in frame.columns)


def _validated_events(frame: pl.DataFrame) -> pl.DataFrame:
    for c in OPTIONAL_COLUMNS:
        if c not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(c))
    frame = _stripped(frame, (*EVENT_COLUMNS, *OPTIONAL_COLUMNS))
    frame = frame.with_columns(_ts=_parsed_timestamp(frame))
    rules = _text_problems(frame, EVENT_COLUMNS, OPTIONAL_COLUMNS)
    rules += [
        (pl.col("_ts").is_null(), "unparseable timestamp", pl.col("timestamp").str.slice(0, 60)),
        ((pl.col("_ts") < pl.lit(EARLIEST).str.to_datetime(time_zone="UTC"))
         | (pl.col("_ts") >= pl.lit(LATEST).str.to_datetime(time_zone="UTC")),
         f"timestamp outside {EARLIEST[:4]}-{LATEST[:4]}", pl.col("timestamp").str.slice(0, 60)),
        (pl.col("billing_tier").str.strip_chars().ne("") & ~_TIER_KEY.is_in(list(_TIER_BY_KEY)),
         "unknown billing tier", pl.col("billing_tier").str.slice(0, 60)),
    ]
    return _first_reason(frame, rules)


def validate_events(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The landing folder's row rules on a frame of the event columns as text (the server's requests):
    (the valid page views in EVENT_SCHEMA, `row, reason, detail` of each row that breaks one)."""
    checked = _validated_events(frame.with_row_index("_row").with_columns(_reason=pl.lit(None, pl.String)))
    problems = checked.filter(pl.col("_reason").is_not_null()).select(row="_row", reason="_reason", detail="_detail")
    return _kept_events(checked), problems


def _quarantine_duplicates(events: pl.DataFrame) -> pl.DataFrame:
    """A page view repeated (same user, session, time, service, page) is quarantined after its first copy."""
    key = ["user_id", "session_id", "_ts", "service", "page"]
    valid = pl.col("_reason").is_null()
    first_at = pl.format("{}:{}", pl.col("_file"), pl.col("_line")).filter(valid).first().over(
        pl.when(valid).then(pl.struct(key)))
    duplicate = valid & ~pl.struct(key).is_first_distinct().over(valid)
    return events.with_columns(
        _reason=pl.when(duplicate).then(pl.lit("duplicate event")).otherwise("_reason"),
        _detail=pl.when(duplicate).then(pl.format("first at {}", first_at)).otherwise("_detail"))


def _validated_billing(frame: pl.DataFrame) -> pl.DataFrame:
    frame = _stripped(frame, BILLING_COLUMNS)
    if "_typed_date" in frame.columns and isinstance(frame["_typed_date"].dtype, pl.Date | pl.Datetime):
        date = pl.col("_typed_date").cast(pl.Date)
    else:
        date = parse_timestamp(pl.col("date")).dt.date()
    frame = frame.with_columns(_date=date, _cost=pl.col("cost").str.strip_chars().cast(pl.Float64, strict=False))
    rules = _text_problems(frame, BILLING_COLUMNS, ())
    rules += [
        (pl.col("_date").is_null(), "unparseable date", pl.col("date").str.slice(0, 60)),
        (pl.col("_cost").is_null() | ~pl.col("_cost").is_finite(), "cost is not a number",
         pl.col("cost").str.slice(0, 60)),
        (pl.col("_cost") < 0, "negative cost", pl.col("cost")),
    ]
    return _first_reason(frame, rules)


# ----------------------------------------------------------------------------------------------
# results


def _kept_events(events: pl.DataFrame) -> pl.DataFrame:
    kept = events.filter(pl.col("_reason").is_null()).select(
        *[pl.col(c).str.strip_chars() for c in ("user_id", "session_id")],
        pl.col("_ts").alias("timestamp"),
        *[pl.col(c).str.strip_chars() for c in ("service", "page")],
        *[pl.col(c).str.strip_chars().replace("", None) for c in ("country", "city")],
        _TIER_KEY.replace_strict(_TIER_BY_KEY, default=None).alias("billing_tier"),
    )
    return kept.with_columns(_start=pl.col("timestamp").min().over("user_id", "session_id")).sort(
        "user_id", "_start", "session_id", "timestamp").drop("_start").cast(EVENT_SCHEMA)


def _kept(frame: pl.DataFrame | None, schema: dict) -> pl.DataFrame:
    if frame is None:
        return pl.DataFrame(schema=schema)
    return frame.filter(pl.col("_reason").is_null()).select(
        pl.col("user_id").str.strip_chars(), pl.col("_date").alias("date"), pl.col("service").str.strip_chars(),
        pl.col("_cost").alias("cost")).cast(schema)


def _quarantined(frame: pl.DataFrame | None, kind: str) -> pl.DataFrame:
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
