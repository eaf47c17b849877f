"""Segment and RudderStack events (JSON lines, as their warehouse and S3 destinations write them) to page views.

user = `userId` (else `anonymousId`), pseudonymized; session = RudderStack's `context.sessionId`
where present, else a 30-minute gap; time = `timestamp` (else `originalTimestamp`, `receivedAt`);
page = `properties.path` (else `context.page.path`, else the path of the page's URL), service its
first segment; location = `context.location.country`, `.city`. `page` calls are page views; `track`,
`identify`, `screen`, `group` and `alias` calls are filtered and counted by type; a repeated
`messageId` is quarantined after its first record.
"""

from __future__ import annotations

from sessionbert_core.data.exports.records import (
    PageViews,
    Pseudonyms,
    dig,
    json_lines_views,
    label,
    place,
    url_path,
    view,
)

IDENTIFIERS = ("userId", "anonymousId", "ip", "email", "user_id", "anonymous_id", "username", "phone",
               "previousId", "groupId")
CALLS = ("page", "track", "identify", "screen", "group", "alias")


def looks_like(record: dict) -> bool:
    return record.get("type") in CALLS and ("messageId" in record or "anonymousId" in record)


def read(data: bytes, name: str, key: bytes) -> PageViews:
    pseudonyms = Pseudonyms(key, IDENTIFIERS, objects=("traits",))
    return json_lines_views(data, name, pseudonyms, _not_a_page, lambda line, record, raw: _view(
        line, record, raw, pseudonyms))


def _not_a_page(record: dict) -> str | None:
    return None if record.get("type") == "page" else f"{label(record.get('type'))} call (not a page view)"


def _view(line: int, record: dict, raw: str, pseudonyms: Pseudonyms) -> dict:
    user = pseudonyms.of(record.get("userId") or record.get("anonymousId"))
    session = dig(record, "context", "sessionId")
    page = (dig(record, "properties", "path") or dig(record, "context", "page", "path")
            or url_path(dig(record, "properties", "url") or dig(record, "context", "page", "url")))
    return view(line, raw, event_id=record.get("messageId"), user_id=user,
                session_id=None if session is None or user is None else f"{user}-{session}",
                timestamp=record.get("timestamp") or record.get("originalTimestamp") or record.get("receivedAt"),
                page=page, country=place(dig(record, "context", "location", "country")),
                city=place(dig(record, "context", "location", "city")))
