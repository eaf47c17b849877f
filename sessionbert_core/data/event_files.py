"""Reading event files record by record: CSV and JSON lines whose bad records cost only themselves.

Every reader returns the file's columns as text plus `_line` (the record's first physical line),
`_reason`/`_detail` (a reading problem, or null) and `_raw_line` (the record as the user wrote it,
where it is not plain UTF-8 text or could not be parsed), and counts what it filtered (blank lines).
Lines come from `reading.FileReader` (bounded, verified to the file's end): a line too long, or the one
the file was cut short in, is a row with its reason. A CSV record whose quote does not close within
MAX_RECORD_LINES physical lines is quarantined alone as `unbalanced quote`, and reading goes on at its
next line; a stray quote or carriage return in an unquoted field costs its record (RFC 4180 quoting); a
JSON line that does not parse, nests too deep, holds a number too long or text that is not Unicode is
one quarantine row. A file of blank lines only has no columns and no rows, like an empty one.
"""

from __future__ import annotations

import csv
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core.config import ReadLimits
from sessionbert_core.data.reading import FILE_REASONS, LINE_TOO_LONG, FileReader, Line, decoded
from sessionbert_core.errors import IngestError

MAX_RECORD_LINES = 50  # physical lines a quoted CSV field may span before its quote counts as unbalanced
csv.field_size_limit(2**31 - 1)  # a record is bounded by the line limit; long fields are quarantined by length
_FIELD = r'(?:"(?:[^"]|"")*+"|[^",]*+)'  # RFC 4180: quoted whole (quotes doubled inside), or holding no quote
WELL_QUOTED = re.compile(rf"{_FIELD}(?:,{_FIELD})*+")
QUOTE_OPEN = re.compile(rf'(?:{_FIELD},)*+"(?:[^"]|"")*+')  # a record whose last field's quote is still open
TEXT_KEYS = ("user_id", "session_id", "service", "page", "country", "city", "billing_tier")  # text or integers
BOM = "\ufeff"
# the columns of a file that gave none (no header, no JSON object): its lines are quarantined, not the file refused
FALLBACK_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page")


@dataclass(frozen=True)
class Records:
    frame: pl.DataFrame  # text columns, _line, _reason, _detail, _raw_line
    read: int  # records read (blank lines included)
    blank: int  # blank lines, filtered


def physical_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the newline that ends the last line starts no line
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def csv_header(line: bytes, name: str) -> list[str]:
    """The column names of a CSV file's first line; an error naming the file for none or a repeated one."""
    text, _, _ = decoded(line.rstrip(b"\r\n"))
    try:
        header = next(csv.reader([text.removeprefix(BOM)]), [])
    except csv.Error as error:
        raise IngestError(f"{name}: the first line is not a CSV header: {_csv_problem(error)}") from None
    if not [h for h in header if h.strip()]:
        raise IngestError(f"{name}: the first line is not a CSV header")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise IngestError(f"{name}: column(s) {', '.join(repeated)} appear more than once in the header")
    return header


class _Rows:
    """The records read so far, as the columns of `Records.frame` (a record's fields: a list, a JSON object's
    dict, or None where it has none)."""

    def __init__(self):
        self.rows, self.numbers, self.reasons, self.details, self.raws = [], [], [], [], []

    def add(self, number: int, fields: list | dict | None, reason: str | None, detail: str | None, raw: str | None):
        self.rows.append(fields)
        self.numbers.append(number)
        self.reasons.append(reason)
        self.details.append(detail)
        self.raws.append(raw)

    def refused(self, line: Line) -> None:
        """A line the reader refused (too long, or the one reading stopped in): its raw bytes as text."""
        self.add(line.number, None, line.reason, line.detail, line.data.decode("utf-8", "backslashreplace"))

    def records(self, columns, blank: int) -> Records:
        rows = [[None] * len(columns) if fields is None else [fields.get(c) for c in columns]
                if isinstance(fields, dict) else fields for fields in self.rows]
        return Records(_frame(rows, self.numbers, self.reasons, self.details, self.raws, columns),
                       len(self.rows) + blank, blank)


def read_csv(path: Path, name: str, limits: ReadLimits | None = None) -> Records:
    """A CSV file's records after its header (its first non-blank line)."""
    reader = FileReader(path, name, limits)
    lines = _ReadAgain(reader.lines())
    first = next(lines, None)
    if first is not None and first.reason == LINE_TOO_LONG:
        raise IngestError(f"{name}: the first line is not a CSV header: {first.detail}")
    if first is None or first.reason:  # blank lines only, or cut before its header ended: no columns, no rows
        rows = _Rows()
        if first is not None:
            rows.refused(first)
        return rows.records((), reader.blank)
    header = csv_header(first.data, name)
    rows = _Rows()
    for line in lines:
        if line.reason:
            rows.refused(line)
            continue
        text, raw, note = decoded(line.data)
        if '"' in text and QUOTE_OPEN.fullmatch(text):
            text, raw, note = _quoted_record(line, text, raw, note, lines)
            if text is None:  # never closed: this line alone is the bad record, the next ones are read again
                text, raw, _ = decoded(line.data)
                rows.add(line.number, None, "unbalanced quote",
                         f"the quote opened on line {line.number} does not close within {MAX_RECORD_LINES} lines",
                         raw or text)
                continue
        fields, reason, detail = _csv_record(text, len(header))
        rows.add(line.number, fields, reason, detail or note, raw if raw is not None else (text if reason else None))
    return rows.records(header, reader.blank)


class _ReadAgain:
    """Lines, those put back in `pending` first (read ahead for a quote that did not close, to read again)."""

    def __init__(self, lines: Iterator[Line]):
        self.lines, self.pending = lines, deque()

    def __iter__(self):
        return self

    def __next__(self) -> Line:
        return self.pending.popleft() if self.pending else next(self.lines)


def _quoted_record(line: Line, text: str, raw: str | None, note: str | None,
                   lines: _ReadAgain) -> tuple[str | None, str | None, str | None]:
    """The record whose quoted field `line` opens, read on to the line that closes it (text, raw, note), or
    None for a quote that does not close within MAX_RECORD_LINES lines (the lines read put back)."""
    read = [line]
    while QUOTE_OPEN.fullmatch(text):
        more = next(lines, None) if len(read) < MAX_RECORD_LINES else None
        if more is None or more.reason:
            lines.pending.extendleft([more] * (more is not None) + read[:0:-1])
            return None, None, None
        more_text, more_raw, more_note = decoded(more.data)
        gap = "\n" * (more.number - read[-1].number)  # blank lines inside the field (the reader skips them)
        raw = None if raw is None and more_raw is None else f"{raw or text}{gap}{more_raw or more_text}"
        text, note = f"{text}{gap}{more_text}", note or more_note
        read.append(more)
    return text, raw, note


def _csv_record(text: str, width: int) -> tuple[list | None, str | None, str | None]:
    """One record's fields, padded or cut to `width`, or the reason it cannot be read."""
    if '"' in text and not WELL_QUOTED.fullmatch(text):
        return None, "stray quote", ('a quote (") inside an unquoted field or after a closing quote: a field '
                                     'that holds a quote is quoted whole, its quotes doubled ("")')
    try:
        record = next(csv.reader([text]), [])
    except csv.Error as error:
        return None, "unparseable CSV record", _csv_problem(error)
    if len(record) != width:
        return (record + [None] * width)[:width], "wrong number of fields", f"{len(record)} fields, header has {width}"
    return record, None, None


def _csv_problem(error: csv.Error) -> str:
    """What Python's csv module found, in words a person can act on."""
    message = str(error)
    if "new-line character" in message:
        return ("a carriage return (\\r) inside an unquoted field: quote the field, or end lines with \\n or "
                "\\r\\n only")
    if "NUL" in message:
        return "a NUL byte (\\x00): not text"
    if "field limit" in message:
        return "a field of more than 2 GiB, the most Python's csv module reads: lower SESSIONBERT_MAX_LINE_BYTES"
    return message


def read_jsonl(path: Path, name: str = "", limits: ReadLimits | None = None) -> Records:
    """A JSON-lines file's records, one object a line."""
    reader = FileReader(path, name or path.name, limits)
    rows = _Rows()
    for line in reader.lines():
        if line.reason:
            rows.refused(line)
            continue
        text, raw, note = decoded(line.data)
        value, reason, detail = _json_record(text)
        rows.add(line.number, value, reason, detail or note, raw if raw is not None else (text if reason else None))
    keys = list(dict.fromkeys(k for record in rows.rows if record for k in record))
    if not keys and any(reason not in FILE_REASONS for reason in rows.reasons):
        keys = list(FALLBACK_COLUMNS)  # no object read: the lines are quarantined, not the file refused
    return rows.records(keys, reader.blank)


def _json_record(text: str) -> tuple[dict[str, str | None], str | None, str | None]:
    """One JSON line as text values, or the reason it cannot be one."""
    try:
        value = json.loads(text)
    except RecursionError:
        return {}, "invalid JSON", "nested too deep"
    except ValueError as error:  # JSONDecodeError, or a number too long to convert
        return {}, "invalid JSON", str(error)[:120]
    if not isinstance(value, dict):
        return {}, "JSON value is not an object", type(value).__name__
    out = {}
    for key, v in value.items():
        if key in TEXT_KEYS and v is not None and (isinstance(v, bool) or not isinstance(v, str | int)):
            return {}, f"{key} is not text", f"a JSON {_json_type(v)}"
        if key == "timestamp" and isinstance(v, bool | dict | list):
            return {}, "unparseable timestamp", f"a JSON {_json_type(v)}"
        out[key] = v if v is None or isinstance(v, str) else json.dumps(v)
    try:
        json.dumps(out, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return {}, "invalid Unicode", "a lone surrogate (\\ud800-\\udfff) escape"
    return out, None, None


def _json_type(value) -> str:
    return {bool: "boolean", dict: "object", list: "array", float: "number", int: "number"}.get(type(value), "value")


def _frame(rows: list[list], numbers: list[int], reasons: list, details: list, raws: list,
           columns) -> pl.DataFrame:
    read = pl.DataFrame({"_line": pl.Series(numbers, dtype=pl.Int64), "_reason": pl.Series(reasons, dtype=pl.String),
                         "_detail": pl.Series(details, dtype=pl.String), "_raw_line": pl.Series(raws, dtype=pl.String)})
    if not columns:  # no header and no object: only the line the file was cut short in, if any
        return read
    return pl.concat([pl.DataFrame(rows, schema={c: pl.String for c in columns}, orient="row"), read],
                     how="horizontal")
