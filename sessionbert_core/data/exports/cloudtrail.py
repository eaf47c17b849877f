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

from sessionbert_core.data.exports.records import PageViews, Pseudonyms, guarded_view, page_views, view

Callers = Literal["console", "programmatic", "all"]
CALLERS: tuple[str, ...] = get_args(Callers)
IDENTIFIERS = ("arn", "ARN", "principalId", "accountId", "userName", "accessKeyId", "sourceIPAddress",
               "recipientAccountId", "roleSessionName", "assumedRoleId", "userId", "identityStoreArn",
               "credentialId", "vpcEndpointAccountId", "sourceIdentity", "errorMessage")  # a message quotes user names
IDENTITY_OBJECTS = ("userIdentity",)  # everything under it names the caller (its session's issuer, source identity)
CONSOLE_AGENTS = re.compile(r"(?i)console\.amazonaws\.com|console\.aws\.amazon\.com|signin\.amazonaws\.com|^Mozilla/")
START = re.compile(r'^\s*\{\s*"Records"\s*:\s*\[')


def looks_like(head: str) -> bool:
    return bool(START.match(head))


def records(text: str) -> tuple[list[tuple[int, dict | None, str | None, str | None, str]], str | None]:
    """The Records array's values in order, each as (index, object or None, reason, detail, its own text);
    and the text after the last whole value when the file stops inside one (cut short), else None. A value
    that does not parse costs only itself: reading goes on after its closing brace."""
    start = START.match(text)
    if not start:
        return [], text[:200]
    decoder, out, at = json.JSONDecoder(), [], start.end()
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return out, None
        try:
            value, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as error:
            end = _object_end(text, at)
            if end is None:
                return out, text[at:]
            out.append((len(out) + 1, None, "invalid JSON", str(error)[:120], text[at:end]))
        else:
            kind = type(value).__name__
            out.append((len(out) + 1, value, None, None, text[at:end]) if isinstance(value, dict) else
                       (len(out) + 1, None, "JSON value is not an object", f"a JSON {kind}", text[at:end]))
        at = end


def _object_end(text: str, at: int) -> int | None:
    """Where the object (or value) starting at `at` ends, by its braces outside strings; None if it never does."""
    depth, quoted, escaped = 0, False, False
    for i in range(at, len(text)):
        char = text[i]
        if quoted:
            escaped, quoted = (False, quoted) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif char == "," and depth == 0:
            return i
    return None


def caller(record: dict) -> str:
    from_console = str(record.get("sessionCredentialFromConsole")).lower() == "true"
    return "console" if from_console or CONSOLE_AGENTS.search(str(record.get("userAgent") or "")) else "programmatic"


def read(data: bytes, name: str, key: bytes, callers: str = "console") -> PageViews:
    pseudonyms = Pseudonyms(key, IDENTIFIERS, objects=IDENTITY_OBJECTS)
    found, rest = records(data.decode("utf-8", "replace").removeprefix("\ufeff"))
    rows, filtered = [], Counter()
    for index, record, reason, detail, raw in found:
        who = caller(record) if record is not None else ""
        if record is None:
            rows.append(view(index, pseudonyms.scrubbed(raw), reason, detail))
        elif record.get("eventType") == "AwsServiceEvent":
            filtered["AWS service event"] += 1
        elif callers != "all" and who != callers:
            filtered[f"{who} call"] += 1
        else:
            rows.append(guarded_view(lambda i, r, text: _view(i, r, text, pseudonyms), index, record,
                                     pseudonyms.scrubbed(raw, record)))
    if rest is not None and rest.strip():
        rows.append(view(len(found) + 1, pseudonyms.scrubbed(rest), "truncated record",
                         f"the file ends inside record {len(found) + 1}"))
    return page_views(rows, name, filtered, len(rows) + sum(filtered.values()), pseudonyms)


def _view(index: int, record: dict, raw: str, pseudonyms: Pseudonyms) -> dict:
    identity = record.get("userIdentity") if isinstance(record.get("userIdentity"), dict) else {}
    source = record.get("eventSource")
    return view(index, raw, event_id=record.get("eventID"),
                user_id=pseudonyms.of(identity.get("arn") or identity.get("principalId")),
                timestamp=record.get("eventTime"), page=record.get("eventName"),
                service=source.split(".", 1)[0] if isinstance(source, str) else source,
                country=record.get("awsRegion"))
