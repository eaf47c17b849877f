"""A landing folder rendered as an event pipeline's export: the same page views as CloudTrail, Snowplow,
Segment (RudderStack's fields) or GA4 records, to run the whole graph on a format's reader at any scale.

URL formats carry the page as `/{service}/{page}`; CloudTrail as `{service}.amazonaws.com` and the page
as the event name, the country as the region. Billing files are copied as they are.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

FORMATS = ("cloudtrail", "snowplow", "segment", "ga4")
SNOWPLOW_COLUMNS = ("app_id", "platform", "collector_tstamp", "derived_tstamp", "event", "event_id",
                    "domain_userid", "domain_sessionid", "geo_country", "geo_city", "page_urlpath")


def _cloudtrail(rows: list[dict]) -> bytes:
    records = [{"eventVersion": "1.10", "eventTime": r["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::000000000000:user/{r['user_id']}"},
                "eventSource": f"{r['service']}.amazonaws.com", "eventName": r["page"], "awsRegion": r["country"],
                "userAgent": "Mozilla/5.0", "sessionCredentialFromConsole": "true", "eventType": "AwsApiCall",
                "eventID": f"event-{i}"} for i, r in enumerate(rows)]
    return gzip.compress(json.dumps({"Records": records}).encode())


def _snowplow(rows: list[dict]) -> bytes:
    out = [",".join(SNOWPLOW_COLUMNS)]
    for i, r in enumerate(rows):
        time = r["timestamp"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        out.append(",".join(["console", "web", time, time, "page_view", f"event-{i}", r["user_id"], r["session_id"],
                             r["country"] or "", r["city"] or "", f"/{r['service']}/{r['page']}"]))
    return ("\n".join(out) + "\n").encode()


def _segment(rows: list[dict]) -> bytes:
    return "".join(json.dumps({
        "type": "page", "messageId": f"event-{i}", "userId": r["user_id"], "anonymousId": f"anon-{r['user_id']}",
        "timestamp": r["timestamp"].isoformat(), "properties": {"path": f"/{r['service']}/{r['page']}"},
        "context": {"sessionId": r["session_id"], "location": {"country": r["country"], "city": r["city"]}}}) + "\n"
        for i, r in enumerate(rows)).encode()


def _ga4(rows: list[dict]) -> bytes:
    return "".join(json.dumps({
        "event_date": r["timestamp"].strftime("%Y%m%d"), "event_name": "page_view",
        "event_timestamp": str(int(r["timestamp"].timestamp() * 1_000_000)), "user_pseudo_id": r["user_id"],
        "event_params": [{"key": "ga_session_id", "value": {"string_value": r["session_id"]}},
                         {"key": "page_location", "value": {
                             "string_value": f"https://console.example.com/{r['service']}/{r['page']}"}}],
        "geo": {"country": r["country"], "city": r["city"]}}) + "\n" for r in rows).encode()


WRITERS: dict[str, Callable[[list[dict]], bytes]] = {"cloudtrail": _cloudtrail, "snowplow": _snowplow,
                                                     "segment": _segment, "ga4": _ga4}


def render(landing: Path, out: Path, fmt: str) -> Path:
    """The page views of `landing`'s event files as one `fmt` export in `out` (named `export-1`, which says
    nothing of its format), with the billing files beside it."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    events = pl.concat([pl.read_parquet(p) for p in sorted(Path(landing).glob("events-*.parquet"))])
    (out / "export-1").write_bytes(WRITERS[fmt](events.sort("timestamp").to_dicts()))
    for billing in Path(landing).glob("billing-*"):
        shutil.copy(billing, out / billing.name)
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", choices=FORMATS, required=True)
    args = parser.parse_args()
    print(render(args.landing, args.out, args.format))


if __name__ == "__main__":
    main()
