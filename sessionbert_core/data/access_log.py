"""Web access logs (Common and Combined Log Format) to page views: pseudonymized users, 30-minute sessions."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core.config import ReadLimits
from sessionbert_core.data.reading import FileReader, decoded
from sessionbert_core.errors import IngestError

SESSION_GAP_MINUTES = 30
LOG_PATTERN = (
    r'^(?P<host>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) \S+'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?\s*$'
)
REQUEST_PATTERN = r"^(?P<method>[A-Z]+) (?P<target>\S+)(?: HTTP/[\d.]+)?$"
STATIC_SUFFIXES = (
    "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "bmp", "css", "js", "map", "woff", "woff2", "ttf", "eot",
    "otf", "mp3", "mp4", "webm", "ogg", "wav", "zip", "gz", "tgz", "tar", "pdf", "swf", "xml", "txt", "json",
)
CRAWLER_AGENTS = (
    r"(?i)bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|feedfetcher|feedly|python-requests|python-urllib"
    r"|curl/|wget|libwww|httpclient|java/|go-http-client|scrapy|pingdom|uptime|monitor|headless|phantomjs|^-?$"
)
FILTERED_SCHEMA = {"source_file": pl.String, "reason": pl.String, "rows": pl.Int64}


@dataclass(frozen=True)
class ParsedLog:
    page_views: pl.DataFrame  # event columns as strings plus _typed_timestamp, _line, _reason, _file, _raw
    filtered: pl.DataFrame  # FILTERED_SCHEMA
    lines_read: int


def pseudonymize(hosts: pl.Series, key: bytes) -> pl.Series:
    """A keyed hash (HMAC-SHA256) of each client host: stable for one key, not reversible without it.

    Each distinct host is hashed once (a log repeats a host for every request it makes).
    """
    digests = {h: pseudonym(h, key) for h in hosts.drop_nulls().unique()}
    return hosts.replace_strict(digests, default=None, return_dtype=pl.String)


def pseudonym(word: str, key: bytes) -> str:
    return "h" + hmac.new(key, word.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymized_line(lines: pl.Series, key: bytes) -> pl.Series:
    """Each log line as it was but for its client host and its user field (CLF's first and third fields),
    replaced by their pseudonyms: what is stored of a raw line (quarantine, parse cache) names no person.
    A line too broken to parse has its first word (where a host would be) replaced all the same."""
    names: dict[str, str] = {}

    def alias(word: str) -> str:
        if word not in names:
            names[word] = pseudonym(word, key)
        return names[word]

    out = []
    for line in lines:
        if line is None:
            out.append(None)
            continue
        words = line.lstrip()  # a line that starts with blanks still has its host as its first word
        fields = words.split(" ", 3)
        if fields and fields[0]:
            fields[0] = alias(fields[0])
        if len(fields) > 2 and fields[2] not in ("", "-"):
            fields[2] = alias(fields[2])
        out.append(line[: len(line) - len(words)] + " ".join(fields))
    return pl.Series(lines.name, out, dtype=pl.String)


def normalize_path(target: pl.Expr) -> pl.Expr:
    """Path without query, fragment or ;params, ids folded to :id, no trailing or doubled slashes."""
    path = (
        target.str.replace(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "")  # absolute-form request targets
        .str.replace(r"[?#].*$", "")
        .str.replace_all(r";[^/]*", "")
        .str.replace_all(r"/{2,}", "/")
        .str.replace_all(r"/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(/|$)",
                         "/:id$1")
        .str.replace_all(r"/\d+(/|$)", "/:id$1")
        .str.replace_all(r"/[0-9a-fA-F]{16,}(/|$)", "/:id$1")
        .str.replace(r"(.)/$", "$1")
    )
    return pl.when(path == "").then(pl.lit("/")).otherwise(path)


def _read_lines(path: Path, name: str, limits: ReadLimits | None = None) -> tuple[pl.DataFrame, int]:
    """The log's non-blank lines (`reading.FileReader`: bounded, verified to its end) as _text, _line and the
    reader's _read_reason, _read_detail (a line too long, the line a cut file stopped in, a Latin-1 guess);
    and its blank lines."""
    reader, texts, numbers, reasons, details = FileReader(path, name, limits), [], [], [], []
    for line in reader.lines():
        text, _, note = decoded(line.data, quote=False)  # the text around a bad byte may name the client
        texts.append(text)
        numbers.append(line.number)
        reasons.append(line.reason)
        details.append(line.detail or note)
    return pl.DataFrame({"_text": texts, "_line": numbers, "_read_reason": reasons, "_read_detail": details},
                        schema={"_text": pl.String, "_line": pl.Int64, "_read_reason": pl.String,
                                "_read_detail": pl.String}), reader.blank


def first_line(path: Path) -> str:
    """The first non-blank line of a log (gzip or plain), read without reading the rest; raises when unreadable."""
    line = next(FileReader(path, path.name).lines(), None)
    return decoded(line.data)[0] if line is not None else ""


def read_page_views(path: Path, name: str, key: bytes, limits: ReadLimits | None = None) -> ParsedLog:
    try:
        frame, blank = _read_lines(path, name, limits)
    except OSError as error:
        raise IngestError(f"{name}: cannot be read as an access log: {error.strerror or error}") from error
    parts = frame.with_columns(pl.col("_text").str.extract_groups(LOG_PATTERN).alias("_log")).unnest("_log")
    parts = parts.with_columns(pl.col("request").str.extract_groups(REQUEST_PATTERN).alias("_req")).unnest("_req")
    parts = parts.with_columns(
        _ts=pl.col("time").str.to_datetime("%d/%b/%Y:%H:%M:%S %z", strict=False, time_unit="us")
        .dt.convert_time_zone("UTC"),
        _path=normalize_path(pl.col("target")),
        _suffix=pl.col("target").str.replace(r"[?#].*$", "").str.extract(r"\.([A-Za-z0-9]{1,6})$").str.to_lowercase(),
    )
    parse_reason = (
        pl.when(pl.col("_read_reason").is_not_null()).then(pl.col("_read_reason"))
        .when(pl.col("host").is_null()).then(pl.lit("not a Common or Combined Log Format line"))
        .when(pl.col("_ts").is_null()).then(pl.lit("unparseable timestamp"))
        .when(pl.col("method").is_null()).then(pl.lit("unparseable request line"))
    )
    filter_reason = (
        pl.when(pl.col("agent").fill_null("").str.contains(CRAWLER_AGENTS) & pl.col("agent").is_not_null()
                | (pl.col("_path") == "/robots.txt"))
        .then(pl.lit("crawler"))
        .when(~pl.col("method").is_in(["GET"])).then(pl.lit("not a GET request"))
        .when(~pl.col("status").str.contains(r"^[23]")).then(pl.format("status {}xx", pl.col("status").str.head(1)))
        .when(pl.col("_suffix").is_in(STATIC_SUFFIXES)).then(pl.lit("static file"))
    )
    parts = parts.with_columns(_reason=parse_reason).with_columns(
        _filtered=pl.when(pl.col("_reason").is_null()).then(filter_reason))
    filtered = (
        parts.filter(pl.col("_filtered").is_not_null())
        .group_by(reason="_filtered").agg(rows=pl.len().cast(pl.Int64))
        .select(pl.lit(name).alias("source_file"), "reason", "rows")
        .sort("rows", descending=True)
    )
    if blank:
        blanks = pl.DataFrame({"source_file": [name], "reason": ["blank line"], "rows": [blank]})
        filtered = pl.concat([filtered, blanks], how="vertical_relaxed").sort("rows", descending=True)
    views = parts.filter(pl.col("_filtered").is_null())
    views = views.with_columns(
        user_id=pseudonymize(views["host"], key),
        service=pl.when(pl.col("_path") == "/").then(pl.lit("home"))
        .otherwise(pl.col("_path").str.extract(r"^/([^/]+)")),
        page=pl.col("_path"),
    )
    views = mark_gap_sessions(views)
    page_views = views.select(
        "user_id", "session_id", pl.col("time").alias("timestamp"), "service", "page",
        pl.col("_ts").alias("_typed_timestamp"), "_line", "_reason", pl.col("_read_detail").alias("_detail"), "_gap",
        pl.lit(name).alias("_file"), pseudonymized_line(views["_text"], key).alias("_raw"),
    )
    return ParsedLog(page_views, filtered.cast(FILTERED_SCHEMA), frame.height + blank)


GAP_SESSION = "(by gap)"  # the session of a row whose session is cut later, across files


def mark_gap_sessions(views: pl.DataFrame) -> pl.DataFrame:
    """Rows without a session (valid, with a user and a time `_ts`) marked `_gap`, with a placeholder
    session: ingestion cuts them into sessions across every file once all are read (`sessions_by_gap`),
    so a session that runs over two log files (a rotation, CloudTrail's five-minute files) stays one."""
    if "session_id" not in views.columns:
        views = views.with_columns(session_id=pl.lit(None, pl.String))
    needs = (pl.col("_reason").is_null() & pl.col("session_id").is_null() & pl.col("user_id").is_not_null()
             & pl.col("_ts").is_not_null())
    return views.with_columns(session_id=pl.when(needs).then(pl.lit(GAP_SESSION)).otherwise("session_id"),
                              _gap=needs)


def sessions_by_gap(events: pl.DataFrame) -> pl.DataFrame:
    """The valid rows marked `_gap`, of every file, cut into sessions: a new one after 30 minutes without
    a page view of the same user, its id from the user and the session's start. Other rows, and the
    order of all, are kept."""
    if "_gap" not in events.columns:
        return events
    events = events.with_row_index("_order")
    needs = pl.col("_gap").fill_null(False) & pl.col("_reason").is_null()
    cut = events.filter(needs).sort("user_id", "_ts", "_file", "_line")
    gap = pl.col("_ts").diff().over("user_id")
    cut = cut.with_columns(
        _session=(gap.is_null() | (gap > pl.duration(minutes=SESSION_GAP_MINUTES))).cum_sum().over("user_id"))
    cut = cut.with_columns(session_id=pl.format(
        "{}-{}", pl.col("user_id"), pl.col("_ts").min().over("user_id", "_session").dt.epoch("s"))).drop("_session")
    return pl.concat([cut, events.filter(~needs)], how="diagonal_relaxed").sort("_order").drop("_order")
