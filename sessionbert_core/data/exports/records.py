"""What every export reader shares: bytes (gzip or not), JSON records with their problems, pseudonyms
in raw records, the page-view frame, duplicate ids, and sessions cut by a 30-minute gap."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import polars as pl

from sessionbert_core.data.access_log import FILTERED_SCHEMA, normalize_path, pseudonym, sessions_by_gap
from sessionbert_core.data.event_files import BOM, physical_lines
from sessionbert_core.data.validate import parse_timestamp

VIEW_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page", "country", "city")
# any text that names a person or an account, wherever it stands in a raw record
PATTERNS = (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # an e-mail address
            r"\barn:aws[\w-]*:[^\"\s,]*",  # an AWS ARN (it holds the account and the user name)
            r"\b(?:\d{1,3}\.){3}\d{1,3}\b",  # an IPv4 address
            r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b")  # an IPv6 address, in full
UNSET = ("", "(not set)", "null")  # what exports write for an unknown location


@dataclass(frozen=True)
class PageViews:
    """A file read to page-view columns as text plus _line, _reason, _detail, _raw and _file."""

    page_views: pl.DataFrame
    filtered: pl.DataFrame  # FILTERED_SCHEMA
    read: int  # records read: kept + quarantined + filtered


@dataclass
class Pseudonyms:
    """Keyed pseudonyms (the access logs' HMAC) of identifiers, and raw records with theirs replaced."""

    key: bytes
    identifier_keys: tuple[str, ...] = ()  # JSON keys (at any depth) or columns whose values name someone
    _known: dict[str, str] = field(default_factory=dict)

    def of(self, value) -> str | None:
        value = text(value)
        if value is None or value == "":
            return None
        if value not in self._known:
            self._known[value] = pseudonym(value, self.key)
        return self._known[value]

    def scrubbed(self, raw: str) -> str:
        """The raw record as it was but for its identifiers: the values of `identifier_keys` (also in a
        truncated record) and any e-mail, ARN or IP address, each replaced by its pseudonym."""
        if self.identifier_keys:
            keys = "|".join(map(re.escape, self.identifier_keys))
            raw = re.sub(rf'("(?:{keys})"\s*:\s*")((?:[^"\\]|\\.)*)', lambda m: m[1] + (self.of(m[2]) or ""), raw)
        for pattern in PATTERNS:
            raw = re.sub(pattern, lambda m: self.of(m[0]), raw)
        return raw


def json_records(data: bytes) -> tuple[list[tuple[int, dict | None, str | None, str | None, str]], int]:
    """Each non-blank line as (line number, object or None, reason, detail, text); and the blank lines."""
    out, blank = [], 0
    for number, line in enumerate(physical_lines(data), start=1):
        text = line.decode("utf-8", "replace").removeprefix(BOM if number == 1 else "")
        if not text.strip():
            blank += 1
            continue
        out.append((number, *parsed_object(text), text))
    return out, blank


def parsed_object(text: str) -> tuple[dict | None, str | None, str | None]:
    try:
        value = json.loads(text)
    except RecursionError:
        return None, "invalid JSON", "nested too deep"
    except ValueError as error:  # a truncated line, or a number too long to convert
        return None, "invalid JSON", str(error)[:120]
    if not isinstance(value, dict):
        return None, "record is not an object", f"a JSON {type(value).__name__}"
    return value, None, None


def dig(record: dict, *path: str):
    """record[path[0]][path[1]]..., or None where any step is missing or not an object."""
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def text(value) -> str | None:
    """A JSON value as text: strings as they are, numbers and booleans as JSON, nothing as None."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def place(value) -> str | None:
    value = text(value)
    return None if value is None or value.strip() in UNSET else value


def url_path(url: str | None) -> str | None:
    """The path of a URL (or of a path), without query or fragment; None for no URL."""
    if not url:
        return None
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


def iso_from_epoch(value, per_second: int) -> str | None:
    """Epoch time in 1/`per_second` of a second (GA4: microseconds) as ISO-8601 UTC, or the value as it was."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return text(value)


def view(line: int, raw: str, reason: str | None = None, detail: str | None = None, event_id: str | None = None,
         **columns) -> dict:
    """One record as a page-view row: the columns given as text, the rest null."""
    return {**{c: text(columns.get(c)) for c in VIEW_COLUMNS}, "_line": line, "_reason": reason,
            "_detail": detail, "_raw": raw, "_event_id": event_id}


ROW_SCHEMA = {c: pl.String for c in VIEW_COLUMNS} | {"_line": pl.Int64, "_reason": pl.String, "_detail": pl.String,
                                                     "_raw": pl.String, "_event_id": pl.String}


def page_views(rows: list[dict] | pl.DataFrame, name: str, filtered: Counter, read: int,
               unit: str = "line") -> PageViews:
    """One file's rows (ROW_SCHEMA) and filtered counts as page views: a repeated event id quarantined
    after its first record (`unit`: what `_line` counts, line or record), a page that is a path
    normalized (ids folded to :id) and its first segment the service where none is given, and sessions
    by gap where none is given."""
    if not isinstance(rows, pl.DataFrame):
        rows = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row") if rows else pl.DataFrame(schema=ROW_SCHEMA)
    valid = pl.col("_reason").is_null()
    # a record that could not be read has no columns to trust (a short CSV record's fields are out of place):
    # its raw record is what is kept
    rows = rows.with_columns(pl.when(valid).then(pl.col(c)).alias(c) for c in VIEW_COLUMNS)
    identified = valid & pl.col("_event_id").is_not_null()
    first = pl.col("_line").filter(identified).first().over(pl.when(identified).then(pl.col("_event_id")))
    repeated = identified & ~pl.col("_event_id").is_first_distinct().over(identified)
    path = normalize_path(pl.col("page"))
    frame = rows.with_columns(
        _reason=pl.when(repeated).then(pl.lit("duplicate event id")).otherwise("_reason"),
        _detail=pl.when(repeated).then(pl.format(f"first at {unit} {{}}", first)).otherwise("_detail"),
        page=pl.when(pl.col("page").str.starts_with("/")).then(path).otherwise("page"),
        service=pl.when(pl.col("service").is_null() & pl.col("page").str.starts_with("/"))
        .then(pl.when(path == "/").then(pl.lit("home")).otherwise(path.str.extract(r"^/([^/]+)")))
        .otherwise("service"),
    )
    frame = frame.with_columns(_ts=parse_timestamp(pl.col("timestamp")))
    # a record that needs its time for a session and has none: its reason is the time, not the session
    untimed = (pl.col("_reason").is_null() & pl.col("session_id").is_null() & pl.col("user_id").is_not_null()
               & pl.col("_ts").is_null())
    missing = pl.col("timestamp").is_null() | (pl.col("timestamp").str.strip_chars() == "")
    frame = frame.with_columns(
        _reason=pl.when(untimed).then(pl.when(missing).then(pl.lit("missing timestamp"))
                                      .otherwise(pl.lit("unparseable timestamp"))).otherwise("_reason"),
        _detail=pl.when(untimed).then(pl.col("timestamp").str.slice(0, 60)).otherwise("_detail"))
    frame = sessions_by_gap(frame)
    counted = pl.DataFrame({"source_file": [name] * len(filtered), "reason": list(filtered),
                            "rows": list(filtered.values())}, schema=FILTERED_SCHEMA)
    return PageViews(frame.drop("_ts", "_event_id").with_columns(_file=pl.lit(name)),
                     counted.sort("rows", descending=True), read)


def json_lines_views(data: bytes, name: str, pseudonyms: Pseudonyms, filtered_as: Callable[[dict], str | None],
                     view_of: Callable[[int, dict, str], dict]) -> PageViews:
    """JSON lines to page views: a line that is no object quarantined, a record `filtered_as` gives a
    reason for filtered and counted by it, any other `view_of(line, record, scrubbed raw record)`."""
    found, blank = json_records(data)
    rows, filtered = [], Counter({"blank line": blank} if blank else {})
    for line, record, reason, detail, raw in found:
        if record is None:
            rows.append(view(line, pseudonyms.scrubbed(raw), reason, detail))
        elif (dropped := filtered_as(record)) is not None:
            filtered[dropped] += 1
        else:
            rows.append(view_of(line, record, pseudonyms.scrubbed(raw)))
    return page_views(rows, name, filtered, len(found) + blank)
