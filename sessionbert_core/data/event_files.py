"""Reading event files record by record: CSV and JSON lines whose bad records cost only themselves.

Every reader returns the file's columns as text plus `_line` (the record's first physical line),
`_reason`/`_detail` (a reading problem, or null) and `_raw_line` (the record as the user wrote it,
where it is not plain UTF-8 text or could not be parsed), and counts what it filtered (blank lines).
A CSV record whose quote does not close within MAX_RECORD_LINES physical lines is quarantined alone
as `unbalanced quote`, and reading goes on at its next line; a JSON line that does not parse, nests
too deep, holds a number too long or text that is not Unicode is one quarantine row.
"""

from __future__ import annotations

import csv
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core.errors import IngestError

MAX_RECORD_LINES = 50  # physical lines a quoted CSV field may span before its quote counts as unbalanced
csv.field_size_limit(64 * 2**20)  # long fields are read and then quarantined by length, not refused by csv
TEXT_KEYS = ("user_id", "session_id", "service", "page", "country", "city", "billing_tier")  # text or integers
BOM = "\ufeff"
GZIP_MAGIC = b"\x1f\x8b"
# the columns of a file that gave none (no header, no JSON object): its lines are quarantined, not the file refused
FALLBACK_COLUMNS = ("user_id", "session_id", "timestamp", "service", "page")


@dataclass(frozen=True)
class Records:
    frame: pl.DataFrame  # text columns, _line, _reason, _detail, _raw_line
    read: int  # records read (blank lines included)
    blank: int  # blank lines, filtered


def _decoded(line: bytes) -> tuple[str, str | None]:
    """The line as text (invalid bytes as U+FFFD, which validation quarantines) and, when it was not
    valid UTF-8, the untouched bytes as text with backslash escapes (for the raw record)."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), line.decode("utf-8", "backslashreplace")


def file_bytes(path: Path, limit: int | None = None) -> bytes:
    """A file's bytes (its first `limit` ones), decompressed when they are gzip's, whatever the file is
    called. A gzip file cut short or corrupt part-way gives what decompressed before the damage: its last
    record then reads as cut short (and is quarantined as such), the ones before it are kept."""
    with path.open("rb") as handle:
        start = handle.read(2)
        if start != GZIP_MAGIC:
            handle.seek(0)
            return handle.read() if limit is None else handle.read(limit)
        handle.seek(0)
        inflate, out, size = zlib.decompressobj(wbits=31), [], 0
        while chunk := handle.read(1 << 20):
            try:
                out.append(inflate.decompress(chunk))
            except zlib.error as error:
                if not out:
                    raise IngestError(f"{path.name}: cannot be decompressed (gzip data corrupt from its start: "
                                      f"{error})") from error
                break
            size += len(out[-1])
            if limit is not None and size >= limit:
                break
            if inflate.eof:  # a second gzip member (concatenated files) starts a new stream
                rest, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
                if rest:
                    out.append(inflate.decompress(rest))
    data = b"".join(out)
    return data if limit is None else data[:limit]


def physical_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":  # the newline that ends the last line starts no line
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def csv_header(line: bytes, name: str) -> list[str]:
    """The column names of a CSV file's first line; an error naming the file for none or a repeated one."""
    text, _ = _decoded(line.rstrip(b"\r\n"))
    header = next(csv.reader([text.removeprefix(BOM)]), [])
    if not [h for h in header if h.strip()]:
        raise IngestError(f"{name}: the first line is not a CSV header")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise IngestError(f"{name}: column(s) {', '.join(repeated)} appear more than once in the header")
    return header


def read_csv(path: Path, name: str) -> Records:
    lines = physical_lines(file_bytes(path))
    if not lines:
        return Records(_frame([], [], [], [], [], ()), 0, 0)
    header = csv_header(lines[0], name)
    rows, numbers, reasons, details, raws = [], [], [], [], []
    blank, i = 0, 1
    while i < len(lines):
        text, raw = _decoded(lines[i])
        if not text.strip():
            blank, i = blank + 1, i + 1
            continue
        last = i
        while text.count('"') % 2 and last + 1 < len(lines) and last - i + 1 < MAX_RECORD_LINES:
            last += 1
            more, more_raw = _decoded(lines[last])
            raw = None if raw is None and more_raw is None else f"{raw or text}\n{more_raw or more}"
            text = f"{text}\n{more}"
        numbers.append(i + 1)
        if text.count('"') % 2:  # never closed: this line alone is the bad record, the next ones are read again
            text, raw = _decoded(lines[i])
            rows.append([None] * len(header))
            reasons.append("unbalanced quote")
            details.append(f"the quote opened on line {i + 1} does not close within {MAX_RECORD_LINES} lines")
            raws.append(raw or text)
            i += 1
            continue
        record = next(csv.reader([text]), [])
        reason = detail = None
        if len(record) != len(header):
            reason, detail = "wrong number of fields", f"{len(record)} fields, header has {len(header)}"
            record = (record + [None] * len(header))[: len(header)]
        rows.append(record)
        reasons.append(reason)
        details.append(detail)
        raws.append(raw if raw is not None else (text if reason else None))
        i = last + 1
    return Records(_frame(rows, numbers, reasons, details, raws, header), len(rows) + blank, blank)


def read_jsonl(path: Path) -> Records:
    records, numbers, reasons, details, raws = [], [], [], [], []
    blank = 0
    for number, line in enumerate(physical_lines(file_bytes(path)), start=1):
        text, raw = _decoded(line)
        if number == 1:
            text = text.removeprefix(BOM)
        if not text.strip():
            blank += 1
            continue
        value, reason, detail = _json_record(text)
        records.append(value)
        numbers.append(number)
        reasons.append(reason)
        details.append(detail)
        raws.append(raw if raw is not None else (text if reason else None))
    keys = list(dict.fromkeys(k for record in records for k in record)) or list(FALLBACK_COLUMNS)
    rows = [[record.get(k) for k in keys] for record in records]
    return Records(_frame(rows, numbers, reasons, details, raws, keys), len(records) + blank, blank)


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
    frame = pl.DataFrame(rows, schema={c: pl.String for c in columns}, orient="row") if rows else \
        pl.DataFrame(schema={c: pl.String for c in columns or FALLBACK_COLUMNS})
    return frame.with_columns(_line=pl.Series(numbers, dtype=pl.Int64), _reason=pl.Series(reasons, dtype=pl.String),
                              _detail=pl.Series(details, dtype=pl.String), _raw_line=pl.Series(raws, dtype=pl.String))
