"""Snowplow atomic events (CSV or Parquet, as warehouses export `atomic.events`) to page views.

user = `domain_userid` (else `user_id`), pseudonymized; session = `domain_sessionid`; time =
`derived_tstamp` (else `collector_tstamp`); page = `page_urlpath` (else the path of `page_url`),
service its first segment; location = `geo_country`, `geo_city`. A repeated `event_id` is
quarantined after its first record; `page_ping` heartbeats and every other non-page event are
filtered and counted by kind.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from sessionbert_core.data.exports.records import ROW_SCHEMA, PageViews, Pseudonyms, label, page_views, path_of_url

SIGNATURE = ("event_id", "collector_tstamp")  # columns every atomic.events export has
IDENTIFIERS = ("user_id", "domain_userid", "network_userid", "user_ipaddress", "user_fingerprint",
               "refr_domain_userid", "ip_address")


def looks_like(columns: list[str]) -> bool:
    return all(c in columns for c in SIGNATURE) and ("domain_userid" in columns or "page_urlpath" in columns)


def _column(frame: pl.DataFrame, *names: str) -> pl.Expr:
    present = [pl.col(n) for n in names if n in frame.columns]
    return pl.coalesce(*[c.replace("", None) for c in present]) if present else pl.lit(None, pl.String)


def read(table: pl.DataFrame, name: str, key: bytes, read_count: int, blank: int) -> PageViews:
    """`table`: every column as text with _line, _reason, _detail, _raw (validate.read_text_table)."""
    pseudonyms = Pseudonyms(key, IDENTIFIERS)
    table = table.with_columns(_kind=_column(table, "event_name", "event"))
    dropped = table.filter(pl.col("_reason").is_null() & (pl.col("_kind").fill_null("") != "page_view"))
    filtered = Counter({("page_ping heartbeat" if k == "page_ping" else f"{label(k)} event (not a page view)"): n
                        for k, n in dropped.group_by("_kind").len().iter_rows()})
    if blank:
        filtered["blank line"] = blank
    kept = table.filter(pl.col("_reason").is_not_null() | (pl.col("_kind") == "page_view"))
    rows = kept.select(
        user_id=pseudonyms.column(kept.select(_column(kept, "domain_userid", "user_id").alias("u"))["u"]),
        session_id=_column(kept, "domain_sessionid"),
        timestamp=_column(kept, "derived_tstamp", "collector_tstamp"),
        service=pl.lit(None, pl.String),
        page=pl.coalesce(_column(kept, "page_urlpath"), path_of_url(_column(kept, "page_url"))),
        country=_column(kept, "geo_country"), city=_column(kept, "geo_city"),
        _line="_line", _reason="_reason", _detail="_detail", _raw=pseudonyms.table_raws(kept),
        _event_id=_column(kept, "event_id"),
    ).cast(ROW_SCHEMA)
    return page_views(rows, name, filtered, read_count, pseudonyms)
