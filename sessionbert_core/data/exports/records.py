"""What every export reader shares: JSON records with their problems, pseudonyms in raw records, the
page-view frame, and the rows whose sessions are cut later by a 30-minute gap (across files)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import polars as pl

from sessionbert_core.data.access_log import FILTERED_SCHEMA, mark_gap_sessions, normalize_path, pseudonym
from sessionbert_core.data.event_files import BOM, physical_lines
from sessionbert_core.data.privacy import PERSON
from sessionbert_core.data.validate import parse_timestamp

VIEW_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page", "country", "city")
ROW_SCHEMA = {c: pl.String for c in VIEW_COLUMNS} | {"_line": pl.Int64, "_reason": pl.String, "_detail": pl.String,
                                                     "_raw": pl.String, "_event_id": pl.String}
URL_HOST = r"^[a-zA-Z][\w+.-]*://[^/]*"  # what a URL has before its path
UNSET = ("", "(not set)", "null")  # what exports write for an unknown location
MAX_LABEL = 60  # characters of a record's own value in a filtered reason or a detail


@dataclass(frozen=True)
class PageViews:
    """A file read to page-view columns as text plus _line, _reason, _detail, _raw, _event_id, _gap, _file."""

    page_views: pl.DataFrame
    filtered: pl.DataFrame  # FILTERED_SCHEMA
    read: int  # records read: kept + quarantined + filtered


@dataclass
class Pseudonyms:
    """Keyed pseudonyms (the access logs' HMAC) of identifiers, and raw records with theirs replaced.

    `identifiers`: the JSON keys (at any depth) or table columns whose values name someone; `objects`:
    keys whose whole object does (Segment's `traits`)."""

    key: bytes
    identifiers: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    _known: dict[str, str] = field(default_factory=dict)
    _keys: re.Pattern | None = None

    def __post_init__(self):
        if self.identifiers:
            keys = "|".join(map(re.escape, self.identifiers))
            # "key": "text" (also cut short) or "key": 123
            self._keys = re.compile(rf'("(?:{keys})"\s*:\s*)(?:"((?:[^"\\]|\\.)*)"?|(-?\d[\d.eE+-]*))')

    def of(self, value) -> str | None:
        value = text(value)
        if value is None or value == "":
            return None
        if value not in self._known:
            self._known[value] = pseudonym(value.encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                                           self.key)
        return self._known[value]

    def column(self, values: pl.Series) -> pl.Series:
        """Each value's pseudonym (each distinct value hashed once)."""
        return values.replace_strict({v: self.of(v) for v in values.drop_nulls().unique()}, default=None,
                                     return_dtype=pl.String)

    def scrubbed(self, raw: str, record: dict | None = None) -> str:
        """The raw record as it was but for its identifiers, each replaced by its pseudonym: the values of
        `identifiers` and everything under `objects` (found in the parsed `record`, so also escaped or
        nested), the same keys' values in text that does not parse, and any e-mail, ARN or IP address."""
        for value in sorted(set(self._identifier_values(record)), key=len, reverse=True) if record else ():
            for form in {json.dumps(value), json.dumps(value, ensure_ascii=False)}:
                raw = raw.replace(form, json.dumps(self.of(value)))
        if self._keys is not None:
            raw = self._keys.sub(lambda m: m[1] + (f'"{self.of(m[2])}"' if m[3] is None else f'"{self.of(m[3])}"')
                                 if (m[2] or m[3]) and not _is_pseudonym(m[2]) else m[0], raw)
        return PERSON.sub(lambda m: self.of(m[0]), raw)  # the one set of patterns (`privacy`)

    def scrubbed_line(self, raw: str, header: list[str]) -> str:
        """A CSV line that could not be read as a record: the fields in identifier columns' places and any
        value already known as an identifier replaced, then the patterns."""
        try:
            fields = next(csv.reader([raw]), [])
        except csv.Error:
            fields = []
        places = [i for i, name in enumerate(header) if name in self.identifiers]
        known = {v for v in self._known if len(v) >= 6}  # long enough not to be part of another value by chance
        for value in sorted({fields[i] for i in places if i < len(fields) and fields[i]} | known, key=len,
                            reverse=True):
            if not _is_pseudonym(value):
                raw = raw.replace(value, self.of(value))
        return self.scrubbed(raw)

    def table_raws(self, table: pl.DataFrame) -> pl.Series:
        """A table's raw records scrubbed: a JSON object of its columns by key, a CSV line that could not be
        read by the places of its identifier columns (`scrubbed_line`)."""
        header = [c for c in table.columns if not c.startswith("_")]
        return pl.Series("_raw", [self.scrubbed(raw) if raw.startswith("{") else self.scrubbed_line(raw, header)
                                  for raw in table["_raw"]], dtype=pl.String)

    def _identifier_values(self, value, key: str = "", inside: bool = False) -> Iterable[str]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield from self._identifier_values(v, k, inside or k in self.objects)
        elif isinstance(value, list):
            for v in value:
                yield from self._identifier_values(v, key, inside)
        elif isinstance(value, str) and value and (inside or key in self.identifiers):
            yield value


def _is_pseudonym(value: str | None) -> bool:
    return bool(value) and re.fullmatch(r"h[0-9a-f]{16}", value) is not None


def json_records(data: bytes) -> tuple[list[tuple[int, dict | None, str | None, str | None, str]], int]:
    """Each non-blank line as (line number, object or None, reason, detail, text); and the blank lines.
    The text keeps bytes that are not UTF-8 as backslash escapes."""
    out, blank = [], 0
    for number, line in enumerate(physical_lines(data), start=1):
        text_ = line.decode("utf-8", "replace").removeprefix(BOM if number == 1 else "")
        if not text_.strip():
            blank += 1
            continue
        raw = line.decode("utf-8", "backslashreplace").removeprefix(BOM if number == 1 else "")
        out.append((number, *parsed_object(text_), raw))
    return out, blank


def parsed_object(text_: str) -> tuple[dict | None, str | None, str | None]:
    try:
        value = json.loads(text_)
    except RecursionError:
        return None, "invalid JSON", "nested too deep"
    except ValueError as error:  # a truncated line, or a number too long to convert
        return None, "invalid JSON", str(error)[:120]
    if not isinstance(value, dict):
        return None, "JSON value is not an object", f"a JSON {type(value).__name__}"
    return value, None, None


def dig(record, *path: str):
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


def label(value) -> str:
    """A record's own value, short enough for a filtered reason."""
    return (text(value) or "unnamed")[:MAX_LABEL]


def place(value) -> str | None:
    value = text(value)
    return None if value is None or value.strip() in UNSET else value


def url_path(url) -> str | None:
    """The path of a URL (or of a path), without query or fragment; None for no URL."""
    if not url:
        return None
    if not isinstance(url, str):
        return text(url)
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


def path_of_url(url: pl.Expr) -> pl.Expr:
    """A URL column's path (query and fragment go with normalization); `/` for a bare host."""
    path = url.str.replace(URL_HOST, "")
    return pl.when(url.is_not_null() & (path == "")).then(pl.lit("/")).otherwise(path)


def iso_from_epoch(value, per_second: int) -> str | None:
    """Epoch time in 1/`per_second` of a second (GA4: microseconds) as ISO-8601 UTC, or the value as it was."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return text(value)


def view(line: int, raw: str, reason: str | None = None, detail: str | None = None, event_id=None,
         **columns) -> dict:
    """One record as a page-view row: the columns given as text, the rest null."""
    return {**{c: text(columns.get(c)) for c in VIEW_COLUMNS}, "_line": line, "_reason": reason,
            "_detail": detail, "_raw": raw, "_event_id": text(event_id) or None}


def page_views(rows: list[dict] | pl.DataFrame, name: str, filtered: Counter, read: int,
               pseudonyms: Pseudonyms) -> PageViews:
    """One file's rows (ROW_SCHEMA) and filtered counts as page views: a page that is a path normalized (ids
    folded to :id, e-mail and IP addresses pseudonymized) and its first segment the service where none is
    given; a row without a session marked for the gap sessions cut across every file (`_gap`)."""
    if not isinstance(rows, pl.DataFrame):
        rows = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row") if rows else pl.DataFrame(schema=ROW_SCHEMA)
    valid = pl.col("_reason").is_null()
    # a record that could not be read has no columns to trust (a short CSV record's fields are out of place):
    # its raw record is what is kept
    rows = rows.with_columns(pl.when(valid).then(pl.col(c)).alias(c) for c in VIEW_COLUMNS)
    pages = rows["page"]
    named = pages.filter(pages.str.contains(r"@|%40|\d+\.\d+\.\d+\.\d+|::")).unique()
    rows = rows.with_columns(page=pages.replace({p: pseudonyms.scrubbed(p) for p in named}))
    path = normalize_path(pl.col("page"))
    frame = rows.with_columns(
        page=pl.when(pl.col("page").str.starts_with("/")).then(path).otherwise("page"),
        service=pl.when(pl.col("service").is_null() & pl.col("page").str.starts_with("/"))
        .then(pl.when(path == "/").then(pl.lit("home")).otherwise(path.str.extract(r"^/([^/]+)")))
        .otherwise("service"),
        _ts=parse_timestamp(pl.col("timestamp")),
    )
    # a record that needs its time for a session and has none: its reason is the time, not the session
    untimed = valid & pl.col("session_id").is_null() & pl.col("user_id").is_not_null() & pl.col("_ts").is_null()
    missing = pl.col("timestamp").is_null() | (pl.col("timestamp").str.strip_chars() == "")
    frame = frame.with_columns(
        _reason=pl.when(untimed).then(pl.when(missing).then(pl.lit("missing timestamp"))
                                      .otherwise(pl.lit("unparseable timestamp"))).otherwise("_reason"),
        _detail=pl.when(untimed).then(pl.col("timestamp").str.slice(0, MAX_LABEL)).otherwise("_detail"))
    counted = pl.DataFrame({"source_file": [name] * len(filtered), "reason": list(filtered),
                            "rows": list(filtered.values())}, schema=FILTERED_SCHEMA)
    return PageViews(mark_gap_sessions(frame).drop("_ts").with_columns(_file=pl.lit(name)),
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
            rows.append(guarded_view(view_of, line, record, pseudonyms.scrubbed(raw, record)))
    return page_views(rows, name, filtered, len(found) + blank, pseudonyms)


def guarded_view(view_of: Callable[[int, dict, str], dict], line: int, record: dict, raw: str) -> dict:
    """`view_of(line, record, raw)`, or the record quarantined where its fields are not of the types
    the format has (a list for a time, a number for a URL)."""
    try:
        return view_of(line, record, raw)
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        return view(line, raw, "field of the wrong type", f"{type(error).__name__}: {str(error)[:100]}")
