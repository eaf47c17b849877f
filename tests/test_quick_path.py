"""The server's few-rows path (`serving.quick`, `serving.quick_ranking`) against the frame path it stands in for:
the same sessions, the same answers ranker by ranker, and every request it is not sure of left to the frames."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import mlflow
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sessionbert_core.data.serialize import serialize_sessions
from sessionbert_core.data.validate import parse_timestamp
from sessionbert_core.serving import quick
from sessionbert_core.serving.request import RequestError, events_from_request

COLUMNS = ("user_id", "session_id", "timestamp", "service", "page", "country", "city", "billing_tier")
WRITTEN = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")


def _request(seed: int, users: int = 4, sessions: int = 3) -> pl.DataFrame:
    """Page views as a client sends them (text): several users and sessions a day, earlier views the same day,
    locations present, blank or missing, names with spaces, brackets and semicolons, tiers spelt loosely, and
    timestamps in every form the path reads (with offsets)."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        at = datetime(2026, 3, 1 + u, 8, tzinfo=UTC)
        for s in range(rng.randint(1, sessions)):
            at += timedelta(minutes=rng.choice([5, 45, 300]))
            for _ in range(rng.randint(1, 5)):
                at += timedelta(seconds=rng.randint(1, 400), microseconds=rng.choice([0, 250_000, 17]))
                offset = rng.choice([None, 0, 2, -5])
                local = at.astimezone(UTC) if offset is None else at + timedelta(hours=offset)
                written = local.strftime(rng.choice(WRITTEN)) if offset is None else (
                    local.strftime("%Y-%m-%dT%H:%M:%S") + f"{'+' if offset >= 0 else '-'}{abs(offset):02d}:00")
                rows.append({"user_id": f" user {u} ", "session_id": f"s{u}-{s}", "timestamp": written,
                             "service": rng.choice(["logs", "compute", "data base", "ml[beta]", "x;y"]),
                             "page": rng.choice(["home", "list items", "a;b", "[MASK]", "detail"]),
                             "country": rng.choice(["FR", "", None, "United States"]),
                             "city": rng.choice(["Paris", None, " New York "]),
                             "billing_tier": rng.choice(["very_high", "Low", " medium ", "", None, "Very-High"])})
    rng.shuffle(rows)
    return pl.DataFrame(rows, schema=dict.fromkeys(COLUMNS, pl.String))


@pytest.mark.parametrize("seed", range(6))
def test_the_sessions_are_serialized_as_the_pipeline_does(seed):
    rows = _request(seed)
    few = quick.read_sessions(rows, recent=8)
    assert few is not None
    frames = serialize_sessions(events_from_request(rows))
    assert_frame_equal(quick.sessions_frame(few), frames)
    assert any(s.context for s in few) and any("[daily_page_token]" in s.context for s in few)


def test_timestamps_read_as_the_landing_folder_reads_them():
    written = ["2026-03-01T10:00:00Z", "2026-03-01 10:00:00", "2026-03-01T10:00:00.5Z", "2026-03-01T23:30:00-02:00",
               "2026-03-01T00:10:00.123456+05:30", "1990-01-01T00:00:00", "2099-12-31T23:59:59.999999Z"]
    parsed = pl.select(parse_timestamp(pl.Series(written))).to_series().to_list()
    assert [quick._timestamp(t) for t in written] == parsed
    for other in ["1767225600", "2026-03-01", "2026-03-01T10:00", "2026-02-30T10:00:00", "1989-12-31T23:59:59Z",
                  "2100-01-01T00:00:00Z", "2026-03-01T10:00:00.1234567Z", "2026-03-01T10:00:00+0100",
                  "\uff12\uff10\uff12\uff16-03-01T10:00:00Z", "2026-03-01T10:00:00+24:00", "2026-03-01T10:00:00+05:60",
                  "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]:
        assert quick._timestamp(other) is None  # the frame path reads (or refuses) these


@pytest.mark.parametrize("change", [
    {"user_id": ""}, {"user_id": None}, {"page": "a\tb"}, {"service": "x\u200by"}, {"city": "\ufffd"},
    {"session_id": "s" * 513}, {"timestamp": "1767225600"}, {"timestamp": "soon"}, {"billing_tier": "gold"},
    {"billing_tier": "hígh"}, {"country": "Fran\u00a0ce"},
])
def test_a_row_not_plainly_valid_goes_to_the_frame_path(change):
    rows = _request(0).with_row_index().with_columns(
        *(pl.when(pl.col("index") == 3).then(pl.lit(v, pl.String)).otherwise(pl.col(c)).alias(c)
          for c, v in change.items())).drop("index")
    assert quick.read_sessions(rows, recent=8) is None


def test_too_many_rows_or_sessions_or_typed_columns_go_to_the_frame_path():
    rows = _request(1, users=2, sessions=3)
    assert quick.read_sessions(rows, recent=3) is not None
    most = rows.group_by("user_id").agg(pl.col("session_id").n_unique()).max()["session_id"][0]
    assert quick.read_sessions(rows, recent=most - 1) is None
    assert quick.read_sessions(pl.concat([rows] * (quick.QUICK_ROWS // rows.height + 1)), recent=8) is None
    assert quick.read_sessions(rows.with_columns(pl.col("timestamp").str.to_datetime(strict=False)), 8) is None
    assert quick.read_sessions(rows.drop("page"), recent=8) is None
    assert quick.read_sessions(rows.clear(), recent=8) is None


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The tiny graph's served model saved once per ranker the few-rows path serves: {ranker: model}."""
    from sessionbert_core.serving.pyfunc import RankingInputs, save_serving_model

    home, _ = trained
    artifacts = home / "serving_model" / "artifacts"
    settings = json.loads((artifacts / "settings.json").read_text())
    splits = pl.read_parquet(home / "session_splits.parquet")
    models = {}
    for ranker in ("count", "persona", "markov", "popularity", "item_knn", "ease"):
        folder = save_serving_model(tmp_path_factory.mktemp(ranker) / "model", artifacts / "finetuned_model",
                                    artifacts / "pretrained_model", artifacts / "cluster_centroids.parquet",
                                    artifacts / "persona_mapping.parquet",
                                    pl.read_parquet(artifacts / "known_users.parquet"), settings | {"ranker": ranker},
                                    RankingInputs.tables(ranker, splits), artifacts / "persona_space")
        models[ranker] = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
    return home, models


@pytest.mark.parametrize("ranker", ["count", "persona", "markov", "popularity", "item_knn", "ease"])
def test_the_answers_are_the_frame_paths_ranker_by_ranker(served, ranker):
    home, models = served
    model = models[ranker]
    events = pl.read_parquet(home / "raw_sessions.parquet").sort("user_id", "timestamp")
    known = events["user_id"].unique().sort()
    picked = events.filter(pl.col("user_id").is_in(known.head(3).implode()))
    newcomers = events.filter(pl.col("user_id").is_in(known.tail(2).implode())).with_columns(
        user_id=pl.format("new-{}", pl.col("user_id")))  # never seen: embedded for a persona (and its cluster size)
    request = pl.concat([picked, newcomers])
    last = (request.group_by("user_id", "session_id").agg(start=pl.col("timestamp").min()).sort("start")
            .group_by("user_id", maintain_order=True).tail(3))  # within the sessions and rows the path reads
    request = (request.join(last, on=["user_id", "session_id"], how="semi")
               .with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")).cast(pl.String))
    plan = model.plan_rows(request)
    assert plan.few is not None and plan.posted["new"].sum() == 2
    answer = model.answer(plan)
    assert_frame_equal(answer, model.answer(model.plan(events_from_request(request))), check_exact=False, rel_tol=1e-9)
    assert answer["services"].list.len().min() > 0 and answer.filter(pl.col("user_id").str.starts_with("new-"))[
        "persona_source"].to_list() == ["inferred from these sessions"] * 2


def test_a_bad_request_is_refused_as_the_frame_path_refuses_it(served):
    _, models = served
    rows = _request(2).with_columns(user_id=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(" "))
                                    .otherwise("user_id"))
    with pytest.raises(RequestError, match="missing user_id in 1 row"):
        models["ease"].plan_rows(rows)
