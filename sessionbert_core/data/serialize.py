"""Sessions as text (paper section 3): the user's context sections, then the activities in order.

Context holds only what was known when the session began: location and billing tier of the session
itself, activities of the same user's earlier page views that day (strictly before the session's
first page view), and billing up to the day before. Activities of the session itself never enter
its context, or every next-activity figure measured on it would be void.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from sessionbert_core import storage
from sessionbert_core.data.validate import BILLING_SCHEMA, EVENT_SCHEMA

SECTION_TOKENS = (
    "[location_token]", "[billing_token]", "[daily_service_token]", "[daily_page_token]",
    "[daily_billed_token]", "[monthly_billed_token]", "[activity]",
)
MAX_DAILY_SERVICES = 8
MAX_DAILY_PAGES = 10
TOP_BILLED = 3

SPLITS = pl.Enum(["train", "validation", "test"])
SPLIT_PROPORTIONS = (5.9, 1.9, 1.1)  # the paper's train : validation : test

SESSION_SCHEMA = {
    "user_id": pl.String, "session_id": pl.String, "day": pl.Date, "start": pl.Datetime("us", "UTC"),
    "n_activities": pl.UInt32, "context": pl.String, "activities": pl.List(pl.String), "text": pl.String,
}


def word(value: pl.Expr) -> pl.Expr:
    """One whitespace-free word, brackets made harmless so no value can impersonate a special token."""
    return value.str.strip_chars().str.replace_all(r"\s+", "_").str.replace_all(r"\[", "(").str.replace_all(
        r"\]", ")")


def activity(service: pl.Expr, page: pl.Expr) -> pl.Expr:
    """The `service;page` token; a ';' inside a name becomes ':' so the separator stays unambiguous."""
    return pl.concat_str(word(service).str.replace_all(";", ":"), pl.lit(";"), word(page).str.replace_all(";", ":"))


def session_text(context: pl.Expr, activities: pl.Expr) -> pl.Expr:
    """`context [activity] a1 [SEP] a2 ...`; the tokenizer adds [CLS] in front and the closing [SEP]."""
    body = pl.concat_str(pl.lit("[activity] "), activities.list.join(" [SEP] "))
    return pl.when(context == "").then(body).otherwise(pl.concat_str(context, pl.lit(" "), body))


def serialize_sessions(events: pl.DataFrame, billing: pl.DataFrame | None = None,
                       billed: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per session (SESSION_SCHEMA), ordered by user and start time. Its billing sections are found in
    `billing` (every row: what each session's day may read is picked here), or come ready in `billed`
    (user_id, day, daily_billed, monthly_billed: `MonthToDate.on`, for the sessions of one day)."""
    events = events.with_columns(activity=activity(pl.col("service"), pl.col("page")),
                                 day=pl.col("timestamp").dt.date())
    sessions = (
        events.group_by("user_id", "session_id")
        .agg(
            start=pl.col("timestamp").min(),
            activities=pl.col("activity").sort_by("timestamp", maintain_order=True),
            country=pl.col("country").drop_nulls().first(),
            city=pl.col("city").drop_nulls().first(),
            billing_tier=pl.col("billing_tier").drop_nulls().first(),
        )
        .with_columns(day=pl.col("start").dt.date(), n_activities=pl.col("activities").list.len())
        .sort("user_id", "start", "session_id")
    )
    daily = _earlier_same_day(events, sessions)
    billed = _billed_before(sessions, billing if billing is not None else pl.DataFrame(schema=BILLING_SCHEMA)
                            ) if billed is None else billed
    sessions = (
        sessions.join(daily, on=["user_id", "session_id"], how="left", maintain_order="left")
        .join(billed, on=["user_id", "day"], how="left", maintain_order="left")
    )
    sections = [
        _section("[location_token]", pl.concat_list(word(pl.col("country")), word(pl.col("city")))),
        _section("[billing_token]", pl.concat_list(word(pl.col("billing_tier")))),
        _section("[daily_service_token]", pl.col("daily_services")),
        _section("[daily_page_token]", pl.col("daily_pages")),
        _section("[daily_billed_token]", pl.col("daily_billed")),
        _section("[monthly_billed_token]", pl.col("monthly_billed")),
    ]
    context = pl.concat_str(sections, separator=" ", ignore_nulls=True).fill_null("")
    return sessions.with_columns(context=context).with_columns(
        text=session_text(pl.col("context"), pl.col("activities"))
    ).select(list(SESSION_SCHEMA)).cast(SESSION_SCHEMA)


def _section(token: str, values: pl.Expr) -> pl.Expr:
    """`token v1 v2 ...`, or null (left out) when there is no value."""
    kept = values.list.drop_nulls().list.eval(pl.element().filter(pl.element() != ""))
    return pl.when(kept.list.len() > 0).then(pl.concat_str(pl.lit(token + " "), kept.list.join(" ")))


def _earlier_same_day(events: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    """Services and pages of the user's page views earlier that day, before the session began (most recent last)."""
    earlier = (
        sessions.select("user_id", "session_id", "day", "start")
        .join(events.select("user_id", "day", "timestamp", "service", "activity"), on=["user_id", "day"])
        .filter(pl.col("timestamp") < pl.col("start"))
        .sort("user_id", "session_id", "timestamp")
    )
    return earlier.group_by("user_id", "session_id").agg(
        daily_services=word(pl.col("service")).reverse().unique(maintain_order=True).head(MAX_DAILY_SERVICES)
        .reverse(),
        daily_pages=pl.col("activity").reverse().unique(maintain_order=True).head(MAX_DAILY_PAGES).reverse(),
    )


def _billed_before(sessions: pl.DataFrame, billing: pl.DataFrame) -> pl.DataFrame:
    """Most billed services of the day before, and of the month so far up to the day before."""
    days = sessions.select("user_id", "day").unique()
    if billing.height == 0:
        return days.with_columns(daily_billed=pl.lit(None, pl.List(pl.String)),
                                 monthly_billed=pl.lit(None, pl.List(pl.String)))
    daily_cost = billing.group_by("user_id", "date", "service").agg(pl.col("cost").sum())
    most_billed = _most_billed()
    yesterday = (
        daily_cost.group_by("user_id", "date")
        .agg(daily_billed=most_billed)
        .with_columns(day=pl.col("date").dt.offset_by("1d"))
        .drop("date")
    )
    month_to_date = (
        daily_cost.sort("date")
        .with_columns(month=pl.col("date").dt.month_start(),
                      cost=pl.col("cost").cum_sum().over("user_id", "service", pl.col("date").dt.month_start()))
    )
    # for each session day and service billed this month: the month-to-date cost on the latest earlier date
    wanted = (
        days.with_columns(month=pl.col("day").dt.month_start(), asof=pl.col("day").dt.offset_by("-1d"))
        .join(month_to_date.select("user_id", "month", "service").unique(), on=["user_id", "month"])
        .sort("asof")
    )
    monthly = (
        wanted.join_asof(month_to_date.select("user_id", "service", "month", "date", "cost").sort("date"),
                         left_on="asof", right_on="date", by=["user_id", "service", "month"], strategy="backward",
                         check_sortedness=False)
        .filter(pl.col("cost").is_not_null())
        .group_by("user_id", "day")
        .agg(monthly_billed=most_billed)
    )
    return (
        days.join(yesterday, on=["user_id", "day"], how="left")
        .join(monthly, on=["user_id", "day"], how="left")
    )


def _most_billed() -> pl.Expr:
    """The most billed services first (ties: by name), ordered within each small group: no global sort
    (benchmarks/NOTES.md)."""
    return word(pl.col("service")).sort_by("cost", "service", descending=[True, False]).head(TOP_BILLED)


COST_SCHEMA = {"user_id": pl.String, "service": pl.String, "cost": pl.Float64}


class MonthToDate:
    """The billing a day's sessions may read, carried from day to day: the costs of the day before, and of the
    month so far, per user and service. The month is summed in date order, one day's costs added at a time, as
    `_billed_before` sums a whole table (the same figures to the last bit); each day of `billing` (kept by day)
    is read once for days asked in order, so a day costs its own billing, not the month's."""

    def __init__(self, billing: Path):
        self.billing = Path(billing)
        self.upto: date | None = None  # the month so far holds the days before this one
        self.month = pl.DataFrame(schema=COST_SCHEMA)

    def _costs(self, day: date) -> pl.DataFrame:
        return (storage.read_table(storage.day_paths(self.billing, [day]), BILLING_SCHEMA)
                .group_by("user_id", "service").agg(pl.col("cost").sum()).cast(COST_SCHEMA))

    def on(self, day: date) -> pl.DataFrame:
        """user_id, day, daily_billed, monthly_billed: what was known of billing when `day` began."""
        first = day.replace(day=1)
        if self.upto is None or not first <= self.upto <= day:
            self.upto, self.month = first, pl.DataFrame(schema=COST_SCHEMA)
        yesterday = None
        while self.upto < day:
            yesterday = self._costs(self.upto)
            joined = self.month.join(yesterday, on=["user_id", "service"], how="full", coalesce=True)
            self.month = joined.select("user_id", "service",
                                       cost=pl.col("cost").fill_null(0.0) + pl.col("cost_right").fill_null(0.0))
            self.upto += timedelta(days=1)
        if yesterday is None:  # the first of a month: the day before is the last month's
            yesterday = self._costs(day - timedelta(days=1))
        daily = yesterday.group_by("user_id").agg(daily_billed=_most_billed())
        monthly = self.month.group_by("user_id").agg(monthly_billed=_most_billed())
        return daily.join(monthly, on="user_id", how="full", coalesce=True).with_columns(day=pl.lit(day))


def split_sessions(sessions: pl.DataFrame, seed: int = 0,
                   proportions: tuple[float, float, float] = SPLIT_PROPORTIONS) -> pl.DataFrame:
    """Assign each user's sessions to train, validation or test in the paper's proportions, deterministically.

    Users are drawn whole: test and validation each hold every session of a held-out share of
    users. So no test or validation user's session is ever trained on: the next-activity test
    measures sessions of people the model never saw, the Hit@k evaluation scores those users' later
    days against a model that knows nothing of them, and what serves is chosen on validation users
    held out the same way (early stopping then also reads people the model never saw). Draws are
    keyed hashes of the user, so an assignment never changes when other users or sessions are added
    or removed. The proportions are of users, so of sessions on average.
    """
    total = sum(proportions)
    test_cut = 1.0 - proportions[2] / total
    validation_cut = test_cut - proportions[1] / total
    key = f"sessionbert-split-{seed}".encode()

    def unit(value: str) -> float:
        return int.from_bytes(hashlib.blake2b(value.encode(), key=key, digest_size=8).digest(), "big") / 2.0**64

    user_draw = pl.col("user_id").map_elements(unit, return_dtype=pl.Float64)
    split = (pl.when(user_draw >= test_cut).then(pl.lit("test"))
             .when(user_draw >= validation_cut).then(pl.lit("validation")).otherwise(pl.lit("train")))
    return sessions.with_columns(split=split.cast(SPLITS))


def split_problem(sessions: pl.DataFrame | pl.LazyFrame) -> str | None:
    """Why these sessions cannot train and evaluate a model (a split with no user), or None."""
    figures = sessions.lazy().group_by(pl.col("split").cast(pl.String)).agg(
        sessions=pl.len(), users=pl.col("user_id").n_unique()).collect(engine="streaming")
    users = {name: int(figures.filter(pl.col("split") == name)["users"].sum())
             for name in ("train", "validation", "test")}
    if all(users.values()):
        return None
    return (f"too few users to train and evaluate: {sum(users.values())} user(s) in {figures['sessions'].sum()} "
            f"session(s) split into " + ", ".join(f"{name} {n}" for name, n in users.items())
            + " users. Splits hold whole users (5.9 : 1.9 : 1.1), so every split needs some: the landing "
              "folder needs more users (a few dozen at least) before a model can train on it.")


def recent_sessions(sessions: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each user's last `n` sessions by start time."""
    return sessions.sort("user_id", "start", "session_id").group_by("user_id", maintain_order=True).tail(n)


def split_days(events: Path, billing: Path, target: Path, days: list[date], seed: int = 0) -> list[storage.Parts]:
    """`serialize_sessions` and `split_sessions` of each of `days` alone, from the page views and billing kept by
    day in `events` and `billing` (the billing known that day carried over from the day before: `MonthToDate`),
    each written as `target/<day>.parquet`: memory holds one day, and a new day costs that day and the month's
    billing before it. (Sessions are cut at midnight, so a day's sessions, their earlier page views of the day
    and the billing up to the day before are all the context there is.)"""
    known, written = MonthToDate(billing), []
    for day in sorted(days):
        page_views = storage.read_table(storage.day_paths(events, [day]), EVENT_SCHEMA)
        sessions = split_sessions(serialize_sessions(page_views, billed=known.on(day)), seed=seed)
        written.append(storage.Parts(storage.write_day(sessions, target, day), sessions.height))
    return written


def split_figures(sessions: pl.LazyFrame) -> pl.DataFrame:
    """Sessions, users and mean activities per split, counted as a stream."""
    return (sessions.group_by("split").agg(sessions=pl.len().cast(pl.Int64), users=pl.col("user_id").n_unique()
                                           .cast(pl.Int64), mean_activities=pl.col("n_activities").mean().round(2))
            .sort("split").with_columns(pl.col("split").cast(pl.String)).collect(engine="streaming"))
