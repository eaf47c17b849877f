"""AWS CloudTrail log files (`{"Records": [...]}`, gzipped or not) to console page views.

user = `userIdentity.arn` (else `principalId`), pseudonymized; service = the first label of
`eventSource` (`s3.amazonaws.com` -> `s3`), page = `eventName`, time = `eventTime`, location =
`awsRegion`; sessions by a 30-minute gap. Console callers (`sessionCredentialFromConsole`, or a
console or browser user agent) are kept by default, programmatic ones (the CLI, SDKs, Terraform)
filtered and counted; `callers` chooses. AWS's own service events are filtered. A file cut short
keeps every whole record before the cut; what follows is one quarantined record.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Literal, get_args

from sessionbert_core.data.exports.records import PageViews, Pseudonyms, dig, page_views, parsed_object, view

Callers = Literal["console", "programmatic", "all"]
CALLERS: tuple[str, ...] = get_args(Callers)
IDENTIFIERS = ("arn", "principalId", "accountId", "userName", "accessKeyId", "sourceIPAddress",
               "recipientAccountId", "ARN")
CONSOLE_AGENTS = re.compile(r"(?i)console\.amazonaws\.com|console\.aws\.amazon\.com|signin\.amazonaws\.com|^Mozilla/")
START = re.compile(r'^\s*\{\s*"Records"\s*:\s*\[')


def looks_like(head: str) -> bool:
    return bool(START.match(head))


def records(text: str) -> tuple[list[tuple[int, dict | None, str]], str | None]:
    """The objects of the Records array in order, each with its index and its own text; and the text
    after the last whole record when the file stops inside one (a truncated file), else None."""
    start = START.match(text)
    if not start:
        return [], text[:200]
    decoder, out, at = json.JSONDecoder(), [], start.end()
    while True:
        at = _skip(text, at, " \t\r\n,")
        if at >= len(text) or text[at] == "]":
            return out, None
        try:
            value, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return out, text[at:]
        out.append((len(out) + 1, value if isinstance(value, dict) else None, text[at:end]))
        at = end


def _skip(text: str, at: int, chars: str) -> int:
    while at < len(text) and text[at] in chars:
        at += 1
    return at


def caller(record: dict) -> str:
    from_console = str(dig(record, "sessionCredentialFromConsole")).lower() == "true"
    return "console" if from_console or CONSOLE_AGENTS.search(str(record.get("userAgent") or "")) else "programmatic"


def read(data: bytes, name: str, pseudonyms: Pseudonyms, callers: str = "console") -> PageViews:
    pseudonyms.identifier_keys = IDENTIFIERS
    found, rest = records(data.decode("utf-8", "replace").removeprefix("\ufeff"))
    rows, filtered = [], Counter()
    for index, record, raw in found:
        if record is None:
            rows.append(view(index, pseudonyms.scrubbed(raw), *parsed_object(raw)[1:]))
        elif record.get("eventType") == "AwsServiceEvent":
            filtered["AWS service event"] += 1
        elif callers != "all" and caller(record) != callers:
            filtered[f"{caller(record)} call"] += 1
        else:
            rows.append(_view(index, record, raw, pseudonyms))
    if rest is not None and rest.strip():
        rows.append(view(len(found) + 1, pseudonyms.scrubbed(rest), "truncated record",
                         f"the file ends inside record {len(found) + 1}"))
    return page_views(rows, name, filtered, len(rows) + sum(filtered.values()), unit="record")


def _view(index: int, record: dict, raw: str, pseudonyms: Pseudonyms) -> dict:
    identity = record.get("userIdentity") if isinstance(record.get("userIdentity"), dict) else {}
    source = record.get("eventSource")
    return view(index, pseudonyms.scrubbed(raw), event_id=record.get("eventID"),
                user_id=pseudonyms.of(identity.get("arn") or identity.get("principalId")),
                timestamp=record.get("eventTime"), page=record.get("eventName"),
                service=source.split(".", 1)[0] if isinstance(source, str) else source,
                country=record.get("awsRegion"))
