"""The paper's data scale on one machine: ingestion, serialization and splitting in user buckets.

`ingest_landing` holds every row of the landing folder at once, which suits folders that fit in
memory. At the paper's scale (9 million sessions, about 90 million page views) the same rules run
here in two passes whose memory is bounded by one file and by one bucket of users:

1. `ingest_to_buckets`: each file is read and validated alone (`parse_file`, the same rules);
   its rejected rows go to the quarantine, its valid rows to the Parquet folder of their user's
   bucket (a hash of the user id), written as they come;
2. `serialize_buckets`: each bucket is read alone; duplicates are found there (a duplicate is the
   same user's page view, so never crosses buckets), then the bucket's sessions are serialized and
   split exactly as `serialize_sessions` and `split_sessions` do for a whole frame.

Every page view read is accounted for: kept, quarantined, or filtered (access logs), per file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data.access_log import sessions_by_gap
from sessionbert_core.data.ingest import PAGE_VIEW_KINDS, discover, kept_rows, parse_file, quarantined_rows
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.data.validate import BILLING_SCHEMA, kept_events, quarantine_duplicates
from sessionbert_core.errors import IngestError

BUCKETS = 64


def bucket_of(user_id: pl.Expr, buckets: int) -> pl.Expr:
    """The user's bucket: a hash of the (stripped) user id; stable within one polars version, which is all a
    run of these stages needs (both passes run together)."""
    return (user_id.str.strip_chars().hash(seed=0) % buckets).cast(pl.Int32)


def _write_buckets(frame: pl.DataFrame, folder: Path, part: str, buckets: int) -> None:
    for (bucket,), rows in frame.with_columns(_bucket=bucket_of(pl.col("user_id"), buckets)).partition_by(
            "_bucket", as_dict=True).items():
        target = folder / f"bucket={bucket:04d}" / f"{part}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.drop("_bucket").write_parquet(target)


def ingest_to_buckets(folder: Path, out: Path, pseudonym_key: bytes, buckets: int = BUCKETS,
                      report: Callable[[str], None] = print) -> dict:
    """Pass 1: every file of the landing folder, one at a time, into user buckets under `out`."""
    found = [f for f in discover(Path(folder)) if f.kind not in ("ignored", "mapping")]
    if not any(f.kind in PAGE_VIEW_KINDS for f in found):
        raise IngestError(f"{folder}: no event files, access logs or exports")
    counts = {"files": 0, "rows_read": 0, "rows_valid": 0, "billing_rows_valid": 0, "rows_quarantined": 0,
              "rows_filtered": 0}
    started = time.perf_counter()
    for index, f in enumerate(found):
        name = f.name
        parsed = parse_file(f, name, pseudonym_key)
        rows, part = parsed.rows, f"part-{index:06d}"
        valid = rows.filter(pl.col("_reason").is_null())
        quarantined = quarantined_rows(rows, "billing" if f.kind == "billing" else "event")
        if quarantined.height:
            storage.write_parquet(quarantined, out / "quarantine" / f"{part}.parquet")
        if f.kind == "billing":
            _write_buckets(kept_rows(valid, BILLING_SCHEMA), out / "billing", part, buckets)
        else:
            _write_buckets(valid.drop("_raw"), out / "events", part, buckets)
        counts["files"] += 1
        counts["rows_read"] += parsed.read
        counts["billing_rows_valid" if f.kind == "billing" else "rows_valid"] += valid.height
        counts["rows_quarantined"] += quarantined.height
        counts["rows_filtered"] += int(parsed.filtered["rows"].sum()) if parsed.filtered is not None else 0
        if index % 20 == 0:
            report(f"ingested {index + 1}/{len(found)} files, {counts['rows_read']:,} rows, "
                   f"{time.perf_counter() - started:.0f} s")
    return counts


def serialize_buckets(out: Path, seed: int = 0, report: Callable[[str], None] = print) -> dict:
    """Pass 2: per bucket, duplicates quarantined, sessions serialized and split; `out/sessions/` holds the
    result, one Parquet file per bucket (SESSION_SCHEMA plus `split`)."""
    counts = {"buckets": 0, "events": 0, "duplicates": 0, "sessions": 0, "users": 0}
    bucket_folders = sorted((out / "events").glob("bucket=*"))
    started = time.perf_counter()
    for index, folder in enumerate(bucket_folders):
        parts = [pl.read_parquet(path) for path in sorted(folder.glob("*.parquet"))]
        events = quarantine_duplicates(sessions_by_gap(pl.concat(parts, how="diagonal_relaxed").with_columns(
            _raw=pl.lit("", pl.String))))  # a duplicate's raw text is its first copy's, which is kept
        duplicates = quarantined_rows(events, "event")
        if duplicates.height:
            storage.write_parquet(duplicates, out / "quarantine" / f"duplicates-{folder.name}.parquet")
        kept = kept_events(events)
        billing_folder = out / "billing" / folder.name
        billing = (pl.concat([pl.read_parquet(p) for p in sorted(billing_folder.glob("*.parquet"))])
                   if billing_folder.exists() else pl.DataFrame(schema=BILLING_SCHEMA))
        sessions = split_sessions(serialize_sessions(kept, billing), seed=seed)
        storage.write_parquet(sessions, out / "sessions" / f"{folder.name}.parquet")
        counts["buckets"] += 1
        counts["events"] += kept.height
        counts["duplicates"] += duplicates.height
        counts["sessions"] += sessions.height
        counts["users"] += sessions["user_id"].n_unique()
        if index % 8 == 0:
            report(f"serialized {index + 1}/{len(bucket_folders)} buckets, {counts['sessions']:,} sessions, "
                   f"{time.perf_counter() - started:.0f} s")
    return counts
