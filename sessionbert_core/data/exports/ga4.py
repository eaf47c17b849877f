"""Google Analytics 4's BigQuery export (newline-delimited JSON, as `bq extract` writes it) to page views.

user = `user_pseudo_id`; session = `ga_session_id` of `event_params` (per user); time =
`event_timestamp` (microseconds); page = the path of `page_location`, service its first segment;
location = `geo.country`, `geo.city` (`(not set)` is none). `page_view` events are page views; every
other event is filtered and counted by name.
"""

from __future__ import annotations

from sessionbert_core.data.exports.records import (
    PageViews,
    Pseudonyms,
    dig,
    iso_from_epoch,
    json_lines_views,
    label,
    place,
    url_path,
    view,
)

IDENTIFIERS = ("user_pseudo_id", "user_id")


def looks_like(record: dict) -> bool:
    return "event_name" in record and ("user_pseudo_id" in record or "event_params" in record)


def param(record: dict, key: str):
    """The value of one of `event_params`' entries ({key, value: {string_value | int_value | ...}})."""
    params = record.get("event_params")
    for entry in params if isinstance(params, list) else []:
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("value"), dict):
            return next((v for v in entry["value"].values() if v is not None), None)
    return None


def read(data: bytes, name: str, key: bytes) -> PageViews:
    pseudonyms = Pseudonyms(key, IDENTIFIERS, objects=("user_properties",))
    return json_lines_views(data, name, pseudonyms, _not_a_page_view, lambda line, record, raw: _view(
        line, record, raw, pseudonyms))


def _not_a_page_view(record: dict) -> str | None:
    name = record.get("event_name")
    return None if name == "page_view" else f"{label(name)} event (not a page view)"


def _view(line: int, record: dict, raw: str, pseudonyms: Pseudonyms) -> dict:
    user = pseudonyms.of(record.get("user_pseudo_id"))
    session = param(record, "ga_session_id")
    return view(line, raw, user_id=user, session_id=None if session is None or user is None else f"{user}-{session}",
                timestamp=iso_from_epoch(record.get("event_timestamp"), 1_000_000),
                page=url_path(param(record, "page_location")),
                country=place(dig(record, "geo", "country")), city=place(dig(record, "geo", "city")))
