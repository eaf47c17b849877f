"""Session text: context sections known when the session began, never its own activities; stable splits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from sessionbert_core.data.serialize import SECTION_TOKENS, serialize_sessions, split_problem, split_sessions
from sessionbert_core.data.validate import EVENT_SCHEMA

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def _events(rows: list[tuple[str, str, int, str, str]]) -> pl.DataFrame:
    """(user, session, minutes after T0, service, page)."""
    return pl.DataFrame(
        [(u, s, T0 + timedelta(minutes=m), sv, p, "United States", "New York", "High") for u, s, m, sv, p in rows],
        schema=EVENT_SCHEMA, orient="row")


def _billing(rows: list[tuple[str, date, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user_id": pl.String, "date": pl.Date, "service": pl.String,
                                      "cost": pl.Float64}, orient="row")


def test_text_has_sections_then_activities():
    events = _events([("u", "a", 0, "iam", "users"), ("u", "b", 60, "vpc", "subnets"), ("u", "b", 61, "vpc", "vpcs")])
    billing = _billing([("u", date(2026, 3, 9), "compute", 5.0)])
    text = serialize_sessions(events, billing).filter(pl.col("session_id") == "b")["text"].item()
    assert text == ("[location_token] United_States New_York [billing_token] High "
                    "[daily_service_token] iam [daily_page_token] iam;users "
                    "[daily_billed_token] compute [monthly_billed_token] compute "
                    "[activity] vpc;subnets [SEP] vpc;vpcs")


def test_context_never_holds_the_sessions_own_activities():
    # session b overlaps session a: a's page views after b began are b's future and must stay out
    events = _events([
        ("u", "a", 0, "iam", "users"), ("u", "b", 5, "vpc", "subnets"),
        ("u", "a", 6, "dns", "records"), ("u", "b", 7, "vpc", "vpcs"),
        ("u", "c", 30, "cdn", "distributions"),
    ])
    sessions = serialize_sessions(events, _billing([])).sort("start")
    context = dict(zip(sessions["session_id"], sessions["context"], strict=True))
    assert "[daily_page_token]" not in context["a"]
    assert "iam;users" in context["b"] and "dns;records" not in context["b"] and "vpc;" not in context["b"]
    assert "dns;records" in context["c"] and "vpc;vpcs" in context["c"] and "cdn;" not in context["c"]


def test_context_from_other_days_and_users_stays_out():
    events = _events([("u", "a", 0, "iam", "users"), ("u", "b", 24 * 60, "vpc", "subnets"),
                      ("v", "c", 1, "dns", "records")])
    sessions = serialize_sessions(events, _billing([]))
    assert (~sessions["context"].str.contains("daily_")).all()


def test_billing_of_the_session_day_is_not_known_yet():
    events = _events([("u", "a", 0, "iam", "users")])
    billing = _billing([("u", date(2026, 3, 10), "data_warehouse", 1e6),  # today: not yet known
                        ("u", date(2026, 3, 9), "compute", 3.0),
                        ("u", date(2026, 3, 2), "dns", 50.0),            # earlier this month
                        ("u", date(2026, 2, 27), "cdn", 99.0)])          # last month
    context = serialize_sessions(events, billing)["context"].item()
    assert "data_warehouse" not in context
    assert "[daily_billed_token] compute [monthly_billed_token] dns compute" in context
    assert "cdn" not in context


def test_values_cannot_impersonate_special_tokens():
    events = _events([("u", "a", 0, "x", "[SEP]"), ("u", "a", 1, "my service", "a;b page")])
    text = serialize_sessions(events, _billing([]))["text"].item()
    assert text.endswith("[activity] x;(SEP) [SEP] my_service;a:b_page")
    assert text.count("[SEP]") == 1
    assert all(text.count(token) <= 1 for token in SECTION_TOKENS)


def test_real_world_sessions_have_no_leak(tiny_world):
    """Every daily page of a session's context was visited before the session's first page view."""
    events = pl.read_parquet(tiny_world.landing / "events-*.parquet")
    billing = pl.read_parquet(tiny_world.landing / "billing-*.parquet")
    sessions = serialize_sessions(events, billing)
    with_context = sessions.filter(pl.col("context").str.contains("daily_page_token"))
    assert with_context.height > 50
    pages = with_context.select(
        "user_id", "day", "start",
        page=pl.col("context").str.extract(r"\[daily_page_token\] ([^\[]+)").str.strip_chars().str.split(" "),
    ).explode("page")
    seen = events.select("user_id", day=pl.col("timestamp").dt.date(), ts="timestamp",
                         page=pl.concat_str("service", pl.lit(";"), "page"))
    earlier = pages.join(seen, on=["user_id", "day", "page"]).filter(pl.col("ts") < pl.col("start"))
    assert earlier.select("user_id", "start", "page").n_unique() == pages.n_unique()


def test_splits_are_deterministic_disjoint_and_in_paper_proportions(tiny_world):
    events = pl.read_parquet(tiny_world.landing / "events-*.parquet")
    sessions = serialize_sessions(events, pl.read_parquet(tiny_world.landing / "billing-*.parquet"))
    a, b = split_sessions(sessions), split_sessions(sessions)
    assert a["split"].equals(b["split"])
    assert a.select("user_id", "session_id").is_unique().all()
    users = a.select("user_id", "split").unique()
    assert users["user_id"].is_unique().all()  # a user's sessions all share one split
    shares = users["split"].value_counts(normalize=True)
    share = dict(zip(shares["split"].cast(pl.String), shares["proportion"], strict=True))
    assert abs(share["train"] - 5.9 / 8.9) < 0.12 and abs(share["test"] - 1.1 / 8.9) < 0.08  # of 80 users
    # a session keeps its split when others are removed
    half = split_sessions(sessions.filter(pl.col("user_id") < "u0000040"))
    joined = half.join(a, on=["user_id", "session_id"])
    assert (joined["split"] == joined["split_right"]).all()
    assert not a["split"].equals(split_sessions(sessions, seed=1)["split"])


def test_test_and_validation_users_have_no_session_in_train(tiny_world):
    events = pl.read_parquet(tiny_world.landing / "events-*.parquet")
    sessions = split_sessions(serialize_sessions(events, pl.read_parquet(tiny_world.landing / "billing-*.parquet")))
    for held_out in ("test", "validation"):
        splits_per_user = sessions.group_by("user_id").agg(held=(pl.col("split") == held_out).any(),
                                                           other=(pl.col("split") != held_out).any())
        assert splits_per_user["held"].sum() > 0
        assert not (splits_per_user["held"] & splits_per_user["other"]).any()


def test_too_few_users_to_split_is_said_before_anything_trains():
    sessions = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "session_id": ["s1", "s2", "s3"]})
    split = split_sessions(sessions)
    assert "too few users to train and evaluate: 2 user(s) in 3 session(s)" in split_problem(split)
    many = pl.DataFrame({"user_id": [f"u{i}" for i in range(200)], "session_id": [f"s{i}" for i in range(200)]})
    assert split_problem(split_sessions(many)) is None
