"""Watching a landing folder: which files are new, settled (no longer being written) and readable.

`look` compares the folder with a JSON cursor from the previous look. A file counts once its size
and modification time are the same at two looks in a row, so a file still being copied is not
picked up half-way (writers that can should still write `name.part` or `.name` and rename). A
settled file is new when its content digest is neither in the cursor nor among the files ingestion
has already read; a touched file with the same bytes is not new. New files are probed (headers
only): those ingestion would refuse are reported, and the others make one run key, derived from
their names and contents, so the same file set never triggers twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from sessionbert_core.data import event_files
from sessionbert_core.data.exports import formats
from sessionbert_core.data.ingest import LandingFile, content_digest, discover
from sessionbert_core.data.privacy import Pseudonymizer
from sessionbert_core.data.validate import BILLING_COLUMNS, EVENT_COLUMNS, OPTIONAL_COLUMNS, error_line, schema_problem
from sessionbert_core.errors import IngestError


@dataclass(frozen=True)
class Look:
    new: dict[str, str]  # name -> content digest: settled, new or changed, readable
    rejected: dict[str, str]  # name -> the problem that makes ingestion refuse it
    waiting: list[str]  # still changing since the previous look
    removed: list[str]  # gone since the previous look
    cursor: str  # the state to store for the next look
    run_key: str | None = field(default=None)


def look(folder: Path, cursor: str | None, pseudonym_key: bytes,
         already_ingested: set[tuple[str, str]] = frozenset()) -> Look:
    """Look at `folder` once; see the module docstring. `already_ingested`: (name, digest) pairs; names are
    the pseudonymized ones ingestion stores (`discover`)."""
    folder = Path(folder)
    state = json.loads(cursor) if cursor else {}
    seen: dict[str, dict] = state.get("seen", {})
    pending: dict[str, list[int]] = state.get("pending", {})
    next_seen, next_pending = {}, {}
    new, rejected, waiting = {}, {}, []
    for f in discover(folder, pseudonym_key):
        if f.kind == "ignored":
            continue
        name = f.name
        stat = f.path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        before = seen.get(name)
        if before and before["signature"] == signature:
            next_seen[name] = before
            continue
        if pending.get(name) != signature:  # first seen, or still changing
            next_pending[name] = signature
            if before:  # what it held before stays known until the change settles
                next_seen[name] = before
            waiting.append(name)
            continue
        digest = content_digest(f.path)
        next_seen[name] = {"signature": signature, "sha256": digest}
        if (before and before["sha256"] == digest) or (name, digest) in already_ingested:
            continue
        problem = probe(f)
        if problem:
            rejected[name] = Pseudonymizer(pseudonym_key).text(problem)  # a reader's message may quote a value
        else:
            new[name] = digest
    removed = sorted(set(seen) - set(next_seen) - set(next_pending))
    run_key = None
    if new:
        run_key = "new-data-" + hashlib.sha256("\n".join(f"{n}:{d}" for n, d in sorted(new.items())).encode()
                                               ).hexdigest()[:24]
    cursor = json.dumps({"seen": next_seen, "pending": next_pending}, sort_keys=True)
    return Look(new, rejected, sorted(waiting), removed, cursor, run_key)


def probe(f: LandingFile) -> str | None:
    """A cheap look at a file's header: the problem that would make ingestion refuse it, or None.

    It reads the schema (Parquet), the header line (CSV) or the first bytes (the rest), never the whole
    file, so a watcher can call it on every new file. Exports, JSON lines and access logs are read record
    by record: their bad records are quarantined, never the file.
    """
    required, optional = (BILLING_COLUMNS, ()) if f.kind == "billing" else (EVENT_COLUMNS, OPTIONAL_COLUMNS)
    try:
        start = formats.head(f.path)
        if f.kind not in ("events", "billing") or not start or f.form not in ("parquet", "csv"):
            return None
        if f.form == "parquet":
            schema = pl.Schema(pl.read_parquet_schema(f.path))
            columns = list(schema)
            problem = schema_problem(f.name, schema, required, optional)
            if problem:
                return problem
        else:
            columns = event_files.csv_header(start.split(b"\n", 1)[0], f.name)
    except IngestError as error:
        return str(error)
    except Exception as error:  # polars/pyarrow/gzip raise many types for a corrupt file
        return f"{f.name}: cannot be read as {(f.form or f.kind).upper()}: {error_line(error)}"
    missing = [c for c in required if c not in columns]
    if missing:
        found = ", ".join(columns) or "none"
        return f"{f.name}: missing required column(s) {', '.join(missing)} (columns found: {found})"
    return None
