"""A request to the served model: MLflow's JSON read as the landing folder's page views, or a RequestError
naming what is wrong in the contract's terms (served as a 400, or a 413 when too large)."""

from __future__ import annotations

import polars as pl

REQUIRED = ("user_id", "session_id", "timestamp", "service", "page")
OPTIONAL = ("country", "city", "billing_tier")
MAX_PAGE_VIEWS = 5_000  # per request, by default (docs/serving.md#limits)
PAYLOAD_KEYS = ("dataframe_records", "dataframe_split")


class RequestError(ValueError):
    """A request the model cannot read; served as HTTP 400 (413 when `too_large`) with this message."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def rows_from_payload(payload, max_rows: int = MAX_PAGE_VIEWS) -> pl.DataFrame:
    """MLflow's JSON request (`dataframe_records` or `dataframe_split`) as a frame of text columns, or a
    RequestError naming the first thing that is not a page view: every value text, a whole number, or
    null (a fraction only for an epoch timestamp); nothing nested."""
    if not isinstance(payload, dict) or len(payload.keys() & set(PAYLOAD_KEYS)) != 1:
        raise RequestError("the body is a JSON object with one key, dataframe_records (a list of page views) "
                           "or dataframe_split ({columns, data})")
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise RequestError("dataframe_records is a list of page views (JSON objects)")
        _check_count(len(records), max_rows)
        if not all(isinstance(r, dict) for r in records):
            raise RequestError(f"row {next(i for i, r in enumerate(records) if not isinstance(r, dict))} of "
                               "dataframe_records is not a JSON object")
        columns = [c for c in (*REQUIRED, *OPTIONAL) if any(c in r for r in records)]
        values = {c: [r.get(c) for r in records] for c in columns}
    else:
        split = payload["dataframe_split"]
        if not (isinstance(split, dict) and isinstance(split.get("columns"), list)
                and isinstance(split.get("data"), list) and all(isinstance(c, str) for c in split["columns"])):
            raise RequestError("dataframe_split is {\"columns\": [names], \"data\": [[values], ...]}")
        _check_count(len(split["data"]), max_rows)
        width = len(split["columns"])
        if not all(isinstance(r, list) and len(r) == width for r in split["data"]):
            raise RequestError(f"every row of dataframe_split.data is a list of {width} values, one per column")
        index = {c: i for i, c in enumerate(split["columns"])}
        columns = [c for c in (*REQUIRED, *OPTIONAL) if c in index]
        values = {c: [r[index[c]] for r in split["data"]] for c in columns}
    return pl.DataFrame({c: [_text(v, c, row) for row, v in enumerate(values[c])] for c in columns},
                        schema=dict.fromkeys(columns, pl.String))


def _check_count(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise RequestError(f"{rows} page views in one request; at most {max_rows} (send the last sessions of "
                           "each user, or split the users over several requests)", too_large=True)


def _text(value, column: str, row: int) -> str | None:
    if isinstance(value, str):
        if not value.isascii():
            _require_encodable(value, column, row)
        return value
    if value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and column == "timestamp":
        return repr(value)
    kind = {bool: "true/false", list: "a list", dict: "an object", float: "a fraction"}.get(type(value), "not text")
    raise RequestError(f"row {row}: `{column}` is {kind}; values are text (a timestamp may be epoch seconds)")


def _require_encodable(value: str, column: str, row: int) -> None:
    """JSON may escape half of a UTF-16 pair (`"\\ud800"`): no text holds it, so the row is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(f"row {row}: `{column}` holds a lone surrogate ({value[error.start]!r}), which is not "
                           "text: send UTF-8, or escape a character outside the BMP as a surrogate pair") from None


def events_from_request(rows: pl.DataFrame) -> pl.DataFrame:
    """The request's page views as the ingestion's event frame, checked by the landing folder's rules
    (an id empty, too long or with a control character; a timestamp that is not one), or a RequestError
    naming the column and rows."""
    from sessionbert_core.data.validate import validate_events

    if rows.height == 0:
        raise RequestError("the request has no page views: send rows with " + ", ".join(REQUIRED))
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise RequestError(f"missing column(s) {', '.join(missing)}: each row is a page view with "
                           f"{', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")
    events, problems = validate_events(rows.select(pl.col(c).cast(pl.String) for c in rows.columns
                                                   if c in (*REQUIRED, *OPTIONAL)))
    if problems.height:
        first = problems.row(0, named=True)
        same = problems.filter(pl.col("reason") == first["reason"])
        detail = f" ({first['detail']})" if first["detail"] else ""
        raise RequestError(f"{first['reason']}{detail} in {same.height} row(s) (rows "
                           f"{', '.join(str(r) for r in same['row'].head(5).to_list())})"
                           + (f"; {problems.height - same.height} more row(s) break another rule"
                              if problems.height > same.height else ""))
    return events.sort("user_id", "timestamp")
