"""What a landing-folder file holds, told from its first bytes, not its name.

A mapping in landing.yaml that names the file wins; then the exports (CloudTrail, Snowplow, Segment
or RudderStack, GA4) by their own fields; then the landing folder's own event files, billing files
(`billing*`) and access logs; a name's suffix decides only what content cannot (a table too broken
to tell). What none of these is, is ignored, with the reason.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core.data.access_log import LOG_PATTERN
from sessionbert_core.data.event_files import BOM
from sessionbert_core.data.exports import cloudtrail, ga4, segment, snowplow
from sessionbert_core.data.exports.mapping import TableMapping
from sessionbert_core.data.exports.records import parsed_object
from sessionbert_core.data.reading import FileReader
from sessionbert_core.data.validate import BILLING_COLUMNS, EVENT_COLUMNS
from sessionbert_core.errors import IngestError

HEAD_BYTES = 1 << 16
UNKNOWN = ("not an event file, billing file, access log or known export (CloudTrail, Snowplow, Segment, GA4); "
           "a table in another schema is read through a mapping in landing.yaml")
# what a name's suffix says where the content cannot (a `.json` document is recognized by content only)
SUFFIX_FORMS = ((".parquet", "parquet"), (".csv", "csv"), (".csv.gz", "csv"), (".jsonl", "jsonl"),
                (".jsonl.gz", "jsonl"), (".ndjson", "jsonl"), (".ndjson.gz", "jsonl"))


@dataclass(frozen=True)
class Recognized:
    kind: str  # events, billing, access_log, an export (cloudtrail, snowplow, segment, ga4, mapped) or ignored
    form: str = ""  # parquet, csv, jsonl, json (one document) or log
    reason: str = ""  # why an ignored file is not read
    mapping: TableMapping | None = None


def head(path: Path, name: str = "") -> bytes:
    """The first HEAD_BYTES of the file's content (decompressed when gzip's, decoded when UTF-16), from its
    first non-blank line; an IngestError naming the file where it cannot be read at all."""
    return re.sub(rb"\A(?:[ \t\r]*\n)+", b"", FileReader(path, name or path.name).read(HEAD_BYTES))


def recognize(path: Path, name: str, mappings: tuple[TableMapping, ...] = ()) -> Recognized:
    lower = name.lower()
    by_suffix = next((form for suffix, form in SUFFIX_FORMS if lower.endswith(suffix)), "")
    billing = Path(lower).name.startswith("billing")
    try:
        start = head(path, name)
    except (OSError, IngestError):  # unreadable, or gzip corrupt from its start: the reader names the problem
        return Recognized("access_log", "log") if lower.endswith((".log", ".log.gz")) else \
            Recognized("billing" if billing else "events", by_suffix or "jsonl")
    mapping = next((m for m in mappings if m.matches(name)), None)
    if start.startswith(b"PAR1"):
        return _parquet(path, mapping, billing)
    text = start.decode("utf-8", "replace").removeprefix(BOM)
    lines = [line.rstrip("\r") for line in text.split("\n")[:50] if line.strip()]
    if mapping:
        return Recognized("mapped", "jsonl" if lines and lines[0].lstrip().startswith("{") else "csv",
                          mapping=mapping)
    if cloudtrail.looks_like(text):
        return Recognized("cloudtrail", "json")
    if not start.strip():  # empty, or blank lines only: no rows, whatever it is
        return Recognized("access_log", "log") if lower.endswith((".log", ".log.gz")) else \
            Recognized("billing" if billing else "events", by_suffix or "jsonl")
    if lines and lines[0].lstrip().startswith("{"):
        return _json_lines(lines, by_suffix, billing)
    if lower.endswith((".log", ".log.gz")) or re.match(LOG_PATTERN, lines[0] if lines else ""):
        return Recognized("access_log", "log")
    return _delimited(lines[0] if lines else "", by_suffix, billing)


def _parquet(path: Path, mapping: TableMapping | None, billing: bool) -> Recognized:
    if mapping:
        return Recognized("mapped", "parquet", mapping=mapping)
    try:
        columns = list(pl.read_parquet_schema(path))
    except Exception:  # a corrupt footer: the reader names the problem
        columns = []
    if snowplow.looks_like(columns):
        return Recognized("snowplow", "parquet")
    return Recognized("billing" if billing else "events", "parquet")


def _json_lines(lines: list[str], by_suffix: str, billing: bool) -> Recognized:
    record = next((r for r in (parsed_object(line)[0] for line in lines) if r is not None), None)
    if record is not None and ga4.looks_like(record):
        return Recognized("ga4", "jsonl")
    if record is not None and segment.looks_like(record):
        return Recognized("segment", "jsonl")
    if by_suffix or (record is not None and "user_id" in record):
        return Recognized("billing" if billing else "events", "jsonl")
    return Recognized("ignored", reason=UNKNOWN)  # a JSON document of another kind (a catalog, a config)


def _delimited(first: str, by_suffix: str, billing: bool) -> Recognized:
    try:
        header = next(csv.reader([first]), []) if first else []
    except csv.Error:  # a NUL byte: not text
        header = []
    if snowplow.looks_like(header):
        return Recognized("snowplow", "csv")
    if billing and (by_suffix or all(c in header for c in BILLING_COLUMNS)):
        return Recognized("billing", by_suffix or "csv")
    if all(c in header for c in EVENT_COLUMNS):
        return Recognized("events", "csv")
    if by_suffix:
        return Recognized("events", by_suffix)
    return Recognized("ignored", reason=UNKNOWN)
