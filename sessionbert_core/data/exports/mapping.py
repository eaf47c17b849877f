"""`landing.yaml`: how to read an event table in any other schema, column by column.

    tables:
      - files: "clickstream/*.csv"   # landing-folder paths (a glob); each matching table is read this way
        user: visitor_id             # required; pseudonymized
        time: event_time             # required: ISO-8601 or epoch (time_unit: s, ms or us; default s)
        session: visit_id            # optional: without it, a new session after 30 idle minutes
        url: page_url                # service = the path's first segment, page = the path (ids folded to :id)
        service: product             # optional: instead of the URL's first segment
        page: screen                 # optional: instead of the URL's path
        country: geo_country         # optional
        city: geo_city               # optional
        identifiers: [email, ip]     # optional: further columns pseudonymized in quarantined raw records
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from sessionbert_core.data.exports.records import ROW_SCHEMA, PageViews, Pseudonyms, page_views, path_of_url
from sessionbert_core.errors import IngestError

FILE_NAME = "landing.yaml"
COLUMNS = ("user", "time", "session", "url", "service", "page", "country", "city")
KEYS = ("files", *COLUMNS, "time_unit", "identifiers")
PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}


@dataclass(frozen=True)
class TableMapping:
    number: int  # its place in landing.yaml, from 1
    files: str
    columns: dict[str, str]  # user, time, ... -> the table's column
    time_unit: str = "s"
    identifiers: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatch(name, self.files)

    def label(self) -> str:
        return f"{FILE_NAME} (table {self.number}, files {self.files})"


def load(folder: Path) -> tuple[TableMapping, ...]:
    """The mappings of the landing folder's landing.yaml (none without one); an error that names what is
    missing or wrong."""
    path = Path(folder) / FILE_NAME
    if not path.is_file():
        return ()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise IngestError(f"{FILE_NAME}: not valid YAML: {str(error).splitlines()[0]}") from error
    tables = document.get("tables") if isinstance(document, dict) else None
    if not isinstance(tables, list) or not tables:
        raise IngestError(f"{FILE_NAME}: expected `tables:`, a list of table mappings (docs/landing-folder.md)")
    return tuple(_mapping(number, entry) for number, entry in enumerate(tables, start=1))


def _mapping(number: int, entry) -> TableMapping:
    where = f"{FILE_NAME}: table {number}"
    if not isinstance(entry, dict):
        raise IngestError(f"{where} is not a mapping of keys (files, user, time, ...)")
    unknown = sorted(set(map(str, entry)) - set(KEYS))
    if unknown:
        raise IngestError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    if not isinstance(entry.get("files"), str):
        raise IngestError(f"{where} names no `files` (a landing-folder pattern such as clickstream/*.csv)")
    where = f"{where} ({entry['files']})"
    for needed in ("user", "time"):
        if not isinstance(entry.get(needed), str):
            raise IngestError(f"{where} maps no `{needed}` column: add `{needed}: <column>`")
    if not any(isinstance(entry.get(k), str) for k in ("page", "url")):
        raise IngestError(f"{where} maps neither `page` nor `url`: add `url: <column>` or `page: <column>`")
    unit = str(entry.get("time_unit", "s"))
    if unit not in PER_SECOND:
        raise IngestError(f"{where}: time_unit {unit!r} is none of {', '.join(PER_SECOND)}")
    identifiers = entry.get("identifiers") or []
    if not isinstance(identifiers, list):
        raise IngestError(f"{where}: `identifiers` is not a list of columns")
    return TableMapping(number, entry["files"], {k: entry[k] for k in COLUMNS if isinstance(entry.get(k), str)},
                        unit, tuple(map(str, identifiers)))


REQUIRED = ("user", "time", "url", "page")  # the columns a table must have (an optional one absent is null)


def read(table: pl.DataFrame, name: str, mapping: TableMapping, key: bytes, read_count: int, blank: int,
         form: str) -> PageViews:
    """`table`: every column as text with _line, _reason, _detail, _raw (validate.read_text_table). In JSON
    lines an optional field that no record has is null; a table with a header must have every column mapped."""
    columns = mapping.columns
    missing = {k: c for k, c in columns.items() if c not in table.columns and (form != "jsonl" or k in REQUIRED)}
    if missing:
        found = ", ".join(c for c in table.columns if not c.startswith("_")) or "none"
        raise IngestError(f"{name}: {mapping.label()} maps " + ", ".join(f"`{k}` to `{c}`" for k, c in missing.items())
                          + f", which the file does not have (columns found: {found})")
    pseudonyms = Pseudonyms(key, (columns["user"], *mapping.identifiers))

    def column(name_: str) -> pl.Expr:
        present = name_ in columns and columns[name_] in table.columns
        return pl.col(columns[name_]).replace("", None) if present else pl.lit(None, pl.String)

    time = column("time")
    if mapping.time_unit != "s":
        seconds = time.cast(pl.Float64, strict=False) / PER_SECOND[mapping.time_unit]
        time = pl.when(seconds.is_not_null()).then(seconds.cast(pl.String)).otherwise(time)
    rows = table.select(
        user_id=pseudonyms.column(table[columns["user"]]),
        session_id=column("session"), timestamp=time,
        service=column("service") if "service" in columns else pl.lit(None, pl.String),
        page=column("page") if "page" in columns else path_of_url(column("url")),
        country=column("country"), city=column("city"), _line="_line", _reason="_reason", _detail="_detail",
        _raw=pseudonyms.table_raws(table),
        _event_id=pl.lit(None, pl.String),
    ).cast(ROW_SCHEMA)
    return page_views(rows, name, Counter({"blank line": blank} if blank else {}), read_count, pseudonyms)
