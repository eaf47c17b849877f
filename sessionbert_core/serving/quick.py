"""The few-rows request path: a request of at most QUICK_ROWS page views, each plainly valid, checked,
serialized and ranked row by row in plain Python instead of as frames.

A request to the server is a handful of page views. A frame operation costs 0.1-0.3 ms however few rows
it holds, and the frame path (`validate`, `serialize`, `recommend.ranking`) takes some 110 of them per
request: more than the model's forward pass. This path does the same work with the same rules, in the
same order, and leaves to the frame path whatever it is not sure of, which then answers as before (or names
the problem): more rows than QUICK_ROWS, a value that is not plainly valid (empty, not printable, too long,
an unknown billing tier), a timestamp not written as ISO-8601 to the second, a user who posted more
sessions than the models read, and the names and descriptions rankers. `tests/test_quick_path.py` holds
both paths to the same answers, ranker by ranker.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from sessionbert_core.data.serialize import MAX_DAILY_PAGES, MAX_DAILY_SERVICES, SECTION_TOKENS, SESSION_SCHEMA
from sessionbert_core.data.validate import EARLIEST, EVENT_COLUMNS, LATEST, MAX_CHARS, OPTIONAL_COLUMNS, TIER_BY_KEY
from sessionbert_core.model.inputs import MASK

QUICK_ROWS = 200  # page views: past this the frame path is as quick per row, and bounds memory by design
# ISO-8601 to the second, an optional fraction of up to 6 digits and an optional Z or +hh:mm offset: the forms
# `validate.parse_timestamp` reads the same way (naive is UTC); any other form goes to the frame path
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})?",
                  re.ASCII)  # ASCII digits only, as the frame path reads them
_FIRST, _LAST = (datetime.fromisoformat(d).replace(tzinfo=UTC) for d in (EARLIEST, LATEST))
_TIER_NOISE = re.compile(r"[\s_-]")


@dataclass(frozen=True)
class Session:
    """One serialized session, as a row of `serialize.SESSION_SCHEMA`."""

    user_id: str
    session_id: str
    start: datetime
    activities: list[str]
    context: str

    @property
    def text(self) -> str:
        return session_text(self.context, self.activities)


def session_text(context: str, activities: list[str]) -> str:
    """`serialize.session_text` of one session."""
    body = "[activity] " + " [SEP] ".join(activities)
    return body if context == "" else f"{context} {body}"


def read_sessions(rows: pl.DataFrame, recent: int) -> list[Session] | None:
    """The request's sessions, ordered by user and start, serialized as `serialize.serialize_sessions` does
    (no billing: a request has none); None where the frame path must answer (see the module docstring)."""
    columns = [c for c in (*EVENT_COLUMNS, *OPTIONAL_COLUMNS) if c in rows.columns]
    if (not 0 < rows.height <= QUICK_ROWS or any(c not in columns for c in EVENT_COLUMNS)
            or any(rows.schema[c] != pl.String for c in columns)):
        return None
    views = []
    for values in rows.select(columns).iter_rows():
        view = _view(dict(zip(columns, values, strict=True)))
        if view is None:
            return None
        views.append(view)
    by_session = defaultdict(list)
    for view in views:
        by_session[view["user_id"], view["session_id"]].append(view)
    per_user = Counter(user for user, _ in by_session)
    if max(per_user.values()) > recent:  # the frame path reads each user's last sessions only
        return None
    if len({(v["user_id"], v["timestamp"]) for v in views}) < len(views):  # equal times: the frame path's
        return None  # sorts order them as they may, so the two would not agree
    of_user = defaultdict(list)
    for view in sorted(views, key=lambda v: v["timestamp"]):  # stable: the request's order among equal times
        of_user[view["user_id"]].append(view)
    sessions = []
    for (user, session), its in by_session.items():
        its.sort(key=lambda v: v["timestamp"])
        start = its[0]["timestamp"]
        earlier = [v for v in of_user[user] if v["timestamp"].date() == start.date() and v["timestamp"] < start]
        sessions.append(Session(user, session, start, [v["activity"] for v in its], _context(its, earlier)))
    return sorted(sessions, key=lambda s: (s.user_id, s.start, s.session_id))


def sessions_frame(sessions: list[Session]) -> pl.DataFrame:
    """`sessions` as a frame of SESSION_SCHEMA."""
    return pl.DataFrame({"user_id": [s.user_id for s in sessions], "session_id": [s.session_id for s in sessions],
                         "day": [s.start.date() for s in sessions], "start": [s.start for s in sessions],
                         "n_activities": [len(s.activities) for s in sessions],
                         "context": [s.context for s in sessions], "activities": [s.activities for s in sessions],
                         "text": [s.text for s in sessions]}, schema=SESSION_SCHEMA)


def _view(row: dict) -> dict | None:
    """A page view checked by the landing folder's rules with its values stripped, or None unless plainly
    valid. Printable text holds no control or format character and no whitespace but the space, so Python's
    strip and split match the frame path's Unicode ones there."""
    for column, value in row.items():
        if value is None:
            if column in EVENT_COLUMNS:
                return None
            continue
        if not value.isprintable() or "\ufffd" in value:
            return None
        row[column] = value = value.strip()
        if (value == "" and column in EVENT_COLUMNS) or len(value) > MAX_CHARS:
            return None
    timestamp = _timestamp(row["timestamp"])
    tier = row.get("billing_tier") or None
    if timestamp is None or (tier is not None and not tier.isascii()):
        return None
    if tier is not None:
        tier = TIER_BY_KEY.get(_TIER_NOISE.sub("", tier.lower()))
        if tier is None:
            return None
    return {"user_id": row["user_id"], "session_id": row["session_id"], "timestamp": timestamp,
            "service": row["service"], "activity": activity(row["service"], row["page"]),
            "country": row.get("country") or None, "city": row.get("city") or None, "billing_tier": tier}


def _timestamp(text: str) -> datetime | None:
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        at = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                      int((fraction or "0").ljust(6, "0")), tzinfo=UTC)
    except ValueError:
        return None
    if offset and offset != "Z":
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours >= 24 or minutes >= 60 or not 1900 < at.year < 2200:  # the frame path refuses or names these
            return None
        at -= (1 if offset[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    return at if _FIRST <= at < _LAST else None


def word(value: str) -> str:
    """`serialize.word` of one value (printable text: its only whitespace is the space)."""
    return re.sub(r" +", "_", value.strip()).replace("[", "(").replace("]", ")")


def activity(service: str, page: str) -> str:
    """`serialize.activity` of one page view."""
    return word(service).replace(";", ":") + ";" + word(page).replace(";", ":")


def _context(views: list[dict], earlier: list[dict]) -> str:
    """`serialize.serialize_sessions`' context of a session (`views`, by time) from its first non-empty
    location and tier and the user's `earlier` page views of the day (by time)."""

    def first(key: str) -> str | None:
        return next((v[key] for v in views if v[key] is not None), None)

    def last_distinct(values: list[str], n: int) -> list[str]:
        kept = list(dict.fromkeys(reversed(values)))[:n]
        return kept[::-1]

    location, tier, daily_services, daily_pages = SECTION_TOKENS[:4]
    sections = [(location, [word(x) for x in (first("country"), first("city")) if x is not None]),
                (tier, [word(first("billing_tier"))] if first("billing_tier") is not None else []),
                (daily_services, last_distinct([word(v["service"]) for v in earlier], MAX_DAILY_SERVICES)),
                (daily_pages, last_distinct([v["activity"] for v in earlier], MAX_DAILY_PAGES))]
    return " ".join(f"{token} {' '.join(kept)}" for token, values in sections
                    if (kept := [x for x in values if x != ""]))


def input_text(session: Session) -> str:
    """`inputs.recommendation_inputs`' text of one session: the whole session, then the [MASK] slot."""
    return session_text(session.context, [*session.activities, MASK])
