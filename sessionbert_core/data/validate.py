"""The landing folder's rules: reading a table, its schema, and every row checked (kept or quarantined)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from sessionbert_core.config import TIERS, ReadLimits
from sessionbert_core.data import event_files
from sessionbert_core.errors import IngestError

EVENT_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page")
OPTIONAL_COLUMNS = ("country", "city", "billing_tier")
BILLING_COLUMNS = ("user_id", "date", "service", "cost")
MAX_CHARS = 512
# control (Cc: C0 and C1), format (Cf: bidi overrides, zero-width marks) and line/paragraph separators
CONTROL_CHARS = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
EARLIEST, LATEST = "1990-01-01", "2100-01-01"
TIER_BY_KEY = {t.lower().replace(" ", ""): t for t in TIERS}
_TIER_KEY = pl.col("billing_tier").str.to_lowercase().str.replace_all(r"[\s_-]", "")  # "very_high" -> "veryhigh"

READ_SCHEMA = {"_line": pl.Int64, "_reason": pl.String, "_detail": pl.String, "_raw": pl.String}  # what any file has
QUARANTINE_SCHEMA = {"source_file": pl.String, "line": pl.Int64, "kind": pl.String, "reason": pl.String,
                     "detail": pl.String, "raw": pl.String}
EVENT_SCHEMA = {"user_id": pl.String, "session_id": pl.String, "timestamp": pl.Datetime("us", "UTC"),
                "service": pl.String, "page": pl.String, "country": pl.String, "city": pl.String,
                "billing_tier": pl.String}
BILLING_SCHEMA = {"user_id": pl.String, "date": pl.Date, "service": pl.String, "cost": pl.Float64}


# ----------------------------------------------------------------------------------------------
# reading: every file becomes string columns plus _file, _line, _raw (all the user's columns) and _reason


def read_text_table(path: Path, name: str, form: str, limits: ReadLimits | None = None
                    ) -> tuple[pl.DataFrame, int, int]:
    """Every column of a table file (`form`: parquet, csv or jsonl; csv and jsonl gzipped or not) as text,
    plus _line, _reason, _detail and _raw (the record as the user gave it: a JSON object of every column,
    or the line as written where it could not be parsed); records read and blank lines. A file empty or of
    blank lines only has no columns (and no rows but, where it was cut short, that line's)."""
    try:
        if path.stat().st_size == 0:  # an empty file of any kind holds no rows (and is listed as such)
            frame, read, blank = pl.DataFrame(), 0, 0
        elif form == "parquet":
            frame = pl.read_parquet(path)
            frame = frame.with_columns(_line=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
                                       _reason=_type_reasons(frame.schema), _detail=pl.lit(None, pl.String))
            read, blank = frame.height, 0
        else:
            records = (event_files.read_csv(path, name, limits) if form == "csv" else
                       event_files.read_jsonl(path, name, limits))
            frame, read, blank = records.frame, records.read, records.blank
    except IngestError:
        raise
    except Exception as error:  # polars/pyarrow/gzip raise many types for a corrupt file
        raise IngestError(f"{name}: cannot be read as {form.upper()}: {error_line(error)}") from error
    given = [c for c in frame.columns if not c.startswith("_")]
    if not given:
        return pl.concat([pl.DataFrame(schema=READ_SCHEMA), frame.rename({"_raw_line": "_raw"}, strict=False)],
                         how="diagonal_relaxed"), read, blank
    raw = pl.struct([_as_string(c, frame[c].dtype, raw=True) for c in given]).struct.json_encode()
    typed = [pl.col(c).alias(f"_typed_{c}") for c in given if not isinstance(frame[c].dtype, TEXT_TYPES)]
    return frame.select(
        *[_as_string(c, frame[c].dtype) for c in given], *typed, "_line", "_reason", "_detail",
        _raw=pl.coalesce(pl.col("_raw_line"), raw) if "_raw_line" in frame.columns else raw,
    ), read, blank


def read_table(path: Path, name: str, required: tuple[str, ...], optional: tuple[str, ...],
               form: str | None = None, limits: ReadLimits | None = None) -> tuple[pl.DataFrame, int, int]:
    """The file's contract columns as text plus _file, _line, _reason, _detail and _raw; records read and
    blank lines. `form` (parquet, csv, jsonl) defaults to the file's suffix. A file empty or of blank lines
    only holds no rows (and is listed as such)."""
    form = form or {".parquet": "parquet", ".csv": "csv"}.get(path.suffix.lower(), "jsonl")
    if form == "parquet" and path.stat().st_size:
        try:
            schema = pl.Schema(pl.read_parquet_schema(path))
        except Exception as error:  # polars/pyarrow raise many types for a corrupt file
            raise IngestError(f"{name}: cannot be read as PARQUET: {error_line(error)}") from error
        problem = schema_problem(name, schema, required, optional)
        if problem:
            raise IngestError(problem)
    frame, read, blank = read_text_table(path, name, form, limits)
    if set(frame.columns) <= set(READ_SCHEMA):  # no columns: no rows but the line a cut file stopped in
        return pl.concat([_empty_table(name, required, optional), frame.with_columns(_file=pl.lit(name))],
                         how="diagonal_relaxed"), read, blank
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(c for c in frame.columns if not c.startswith("_")) or "none"
        raise IngestError(f"{name}: missing required column(s) {', '.join(missing)} (columns found: {found}); "
                          "an event table in another schema is read through a mapping in landing.yaml")
    columns = [c for c in (*required, *optional) if c in frame.columns]
    typed = [c for c in ("_typed_timestamp", "_typed_date") if c in frame.columns]
    return frame.select(*columns, *typed, "_line", "_reason", "_detail", "_raw", _file=pl.lit(name)), read, blank


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


def error_line(error: Exception) -> str:
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
        rules.append((pl.col(c).str.contains("\ufffd", literal=True), f"invalid UTF-8 in {c}",  # the reader's guess
                      pl.col("_detail") if "_detail" in frame.columns else pl.lit(None)))
        rules.append((pl.col(c).str.contains(CONTROL_CHARS), f"control character in {c}",
                      pl.col(c).str.extract(f"({CONTROL_CHARS})").map_elements(repr, return_dtype=pl.String)))
        rules.append((pl.col(c).str.len_chars() > MAX_CHARS, f"{c} longer than {MAX_CHARS} characters",
                      pl.format("{} characters", pl.col(c).str.len_chars())))
    return rules


# a frame this small (a request to the server) is first asked whether any row breaks a rule at all: most do not,
# and then the reasons and details, a branch per rule, are never built; a file's table goes straight to them
FAST_PATH_ROWS = 10_000


def _first_reason(frame: pl.DataFrame, rules: list) -> pl.DataFrame:
    """Set `_reason` (a fixed category) and `_detail` to the first rule the row breaks; a reading problem wins."""
    if "_detail" not in frame.columns:
        frame = frame.with_columns(_detail=pl.lit(None, pl.String))
    if frame.height <= FAST_PATH_ROWS and not frame.select(pl.any_horizontal(
            pl.col("_reason").is_not_null(), *(c.fill_null(False) for c, _, _ in rules)).any()).item():
        return frame.with_columns(pl.col("_reason", "_detail").cast(pl.String))  # every row valid: nothing to name
    reason = pl.when(pl.col("_reason").is_not_null()).then(pl.col("_reason"))
    detail = pl.when(pl.col("_reason").is_not_null()).then(pl.col("_detail"))
    for condition, text, value in rules:
        reason = reason.when(condition.fill_null(False)).then(pl.lit(text))
        detail = detail.when(condition.fill_null(False)).then(value)
    return frame.with_columns(_reason=reason.otherwise(None), _detail=detail.otherwise(None).cast(pl.String))


def _stripped(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """Values without surrounding whitespace before any rule or duplicate check (the raw row keeps them)."""
    return frame.with_columns(pl.col(c).str.strip_chars() for c in columns if c in frame.columns)


@dataclass(frozen=True)
class Window:
    """The times a row may have when its file is read: from the first day partition (SESSIONBERT_FIRST_DAY)
    to the time of reading plus a clock-skew allowance, within today's UTC day (the last day partition)."""

    first: datetime
    last: datetime
    first_day: str

    @classmethod
    def at_read(cls, first_day: str = EARLIEST, now: datetime | None = None) -> Window:
        now = now or datetime.now(UTC)
        tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
        return cls(datetime.combine(date.fromisoformat(first_day), time(), UTC),
                   min(now + CLOCK_SKEW, tomorrow - timedelta(microseconds=1)), first_day)

    def rules(self, at: pl.Expr, text: pl.Expr, what: str, by_day: bool = False) -> list:
        """The rules of a row's time `at` (its value as written: `text`); `by_day`: `at` is a date."""
        later = f"after the file was read ({self.last:%Y-%m-%d %H:%M} UTC, clock skew of {CLOCK_SKEW_TEXT} allowed)"
        first, last = (self.first.date(), self.last.date()) if by_day else (self.first, self.last)
        return [(at < pl.lit(first), f"{what} before the first day",
                 pl.format("{} is before SESSIONBERT_FIRST_DAY={}", text.str.slice(0, 60), pl.lit(self.first_day))),
                (at > pl.lit(last), f"{what} in the future", pl.format("{} is {}", text.str.slice(0, 60),
                                                                             pl.lit(later)))]


CLOCK_SKEW = timedelta(minutes=10)  # how far ahead of the reading machine's clock a sender's clock may run
CLOCK_SKEW_TEXT = "10 minutes"


def validated_events(frame: pl.DataFrame, window: Window | None = None) -> pl.DataFrame:
    """Every row's `_reason` and `_detail`: the first rule it breaks (None when valid). `window`: the times a
    page view may have when its file is read (none for a request to the server: 1990-2100)."""
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
        *(window.rules(pl.col("_ts"), pl.col("timestamp"), "timestamp") if window else ()),
        (pl.col("billing_tier").str.strip_chars().ne("") & ~_TIER_KEY.is_in(list(TIER_BY_KEY)),
         "unknown billing tier", pl.col("billing_tier").str.slice(0, 60)),
    ]
    return _first_reason(frame, rules)


def validate_events(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The landing folder's row rules on a frame of the event columns as text (the server's requests):
    (the valid page views in EVENT_SCHEMA, `row, reason, detail` of each row that breaks one)."""
    checked = validated_events(frame.with_row_index("_row").with_columns(_reason=pl.lit(None, pl.String)))
    problems = checked.filter(pl.col("_reason").is_not_null()).select(row="_row", reason="_reason", detail="_detail")
    return kept_events(checked), problems


def quarantine_duplicates(events: pl.DataFrame) -> pl.DataFrame:
    """A record whose export id (`_event_id`: CloudTrail's eventID, Snowplow's event_id, Segment's messageId)
    was seen in a valid record before, or a page view repeated (same user, session, time, service, page),
    is quarantined after its first copy, in any file."""
    if "_event_id" in events.columns:
        events = _first_copy_only(events, ["_event_id"], "duplicate event id",
                                  pl.col("_event_id").is_not_null() & (pl.col("_event_id") != ""))
    return _first_copy_only(events, ["user_id", "session_id", "_ts", "service", "page"], "duplicate event")


def _first_copy_only(events: pl.DataFrame, key: list[str], reason: str, where: pl.Expr | None = None) -> pl.DataFrame:
    valid = pl.col("_reason").is_null() if where is None else pl.col("_reason").is_null() & where
    first_at = pl.format("{}:{}", pl.col("_file"), pl.col("_line")).filter(valid).first().over(
        pl.when(valid).then(pl.struct(key)))
    duplicate = valid & ~pl.struct(key).is_first_distinct().over(valid)
    return events.with_columns(
        _reason=pl.when(duplicate).then(pl.lit(reason)).otherwise("_reason"),
        _detail=pl.when(duplicate).then(pl.format("first at {}", first_at)).otherwise("_detail"))


def validated_billing(frame: pl.DataFrame, window: Window | None = None) -> pl.DataFrame:
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
        *(window.rules(pl.col("_date"), pl.col("date"), "date", by_day=True) if window else ()),
    ]
    return _first_reason(frame, rules)


def kept_events(events: pl.DataFrame) -> pl.DataFrame:
    kept = events.filter(pl.col("_reason").is_null()).select(
        *[pl.col(c).str.strip_chars() for c in ("user_id", "session_id")],
        pl.col("_ts").alias("timestamp"),
        *[pl.col(c).str.strip_chars() for c in ("service", "page")],
        *[pl.col(c).str.strip_chars().replace("", None) for c in ("country", "city")],
        _TIER_KEY.replace_strict(TIER_BY_KEY, default=None).alias("billing_tier"),
    )
    return kept.with_columns(_start=pl.col("timestamp").min().over("user_id", "session_id")).sort(
        "user_id", "_start", "session_id", "timestamp").drop("_start").cast(EVENT_SCHEMA)
