"""The collaborative rankers (EASE, item-kNN), the extra Hit@k figures and the one-standard-error ranker choice."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sessionbert_core.recommend.collaborative import L2_MULTIPLES, ease_weights, fit_ease, fit_item_knn, gram
from sessionbert_core.recommend.hit_at_k import catalogue_coverage, hit_beyond_popularity, method_scores
from sessionbert_core.recommend.ranking import RANKED, recommend_services
from sessionbert_core.recommend.selection import METHOD_OF_RANKER, simplest_within_one_standard_error

SERVICES = ["a", "b", "c", "d", "e", "f", "g", "h"]
FITS = {"ease": lambda used: fit_ease(used, SERVICES), "item_knn": lambda used: fit_item_knn(used, SERVICES)}


def _used(pairs: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame([(u, s) for u, services in pairs.items() for s in services],
                        schema={"user_id": pl.String, "service": pl.String}, orient="row")


# users who used a and b always used c too; d, e, f go together elsewhere; g is everywhere-ish, h nowhere
WORLD = _used({f"abc{i}": "abcg" for i in range(6)} | {f"def{i}": "defg" for i in range(6)}
              | {f"ad{i}": "ad" for i in range(2)} | {"ab": "ab", "new": ""})


@pytest.mark.parametrize("name", list(FITS))
def test_users_of_a_and_b_get_c_first(name):
    ranked = FITS[name](WORLD).rank(pl.Series(["ab"]), WORLD)
    assert ranked["service"][0] == "c", ranked


@pytest.mark.parametrize("name", list(FITS))
def test_recommendations_exclude_used_services_and_keep_five_at_most(name):
    users = WORLD["user_id"].unique()
    ranked = FITS[name](WORLD).rank(users, WORLD)
    assert ranked.schema == pl.Schema(RANKED)
    assert ranked.join(WORLD, on=["user_id", "service"]).height == 0
    assert ranked.group_by("user_id").len()["len"].max() <= 5
    ranks = ranked.group_by("user_id").agg(ok=pl.col("rank") == pl.int_range(1, pl.len() + 1))
    assert ranks["ok"].list.all().all()
    assert ranked.filter(pl.col("user_id") == "abc0")["service"].len() == 4  # 8 services, 4 used
    assert set(ranked["service"]) <= set(SERVICES)


@pytest.mark.parametrize("name", list(FITS))
def test_a_user_with_nothing_used_gets_the_most_used_services(name):
    ranked = FITS[name](WORLD).rank(pl.Series(["nobody"]), WORLD)
    # g (12 users), a (9), d (8), b (7), then c and e (6 each, by name): zero scores, ties by use then name
    assert ranked["service"].to_list() == ["g", "a", "d", "b", "c"]
    assert (ranked["score"] == 0).all()


@pytest.mark.parametrize("name", list(FITS))
def test_the_ranking_is_the_same_whatever_the_order_of_the_rows(name):
    users = WORLD["user_id"].unique()
    first = FITS[name](WORLD).rank(users, WORLD).sort("user_id", "rank")
    again = FITS[name](WORLD.sample(fraction=1.0, shuffle=True, seed=3)).rank(users.reverse(), WORLD)
    assert first.equals(again.sort("user_id", "rank"))


def test_ease_matches_its_closed_form():
    g = gram(WORLD, tuple(SERVICES))
    b = ease_weights(g, 2.0)
    assert np.allclose(np.diag(b), 0.0)
    # the stationarity condition of the constrained least squares: (G + l2 I) B - G is zero off the diagonal
    residual = (g + 2.0 * np.eye(len(g))) @ b - g
    assert np.allclose(residual - np.diag(np.diag(residual)), 0.0, atol=1e-9)


def test_ease_picks_its_l2_on_held_out_use_and_reports_it():
    ranker = fit_ease(WORLD, SERVICES)
    mean = float(np.diag(gram(WORLD, tuple(SERVICES))).mean())
    assert ranker.l2 is not None and min(abs(ranker.l2 / mean - m) for m in L2_MULTIPLES) < 1e-9


def test_item_knn_keeps_k_neighbours_per_service():
    ranker = fit_item_knn(WORLD, SERVICES, k=2)
    assert ((ranker.weights > 0).sum(axis=1) <= 2).all()
    assert ranker.weights[SERVICES.index("a"), SERVICES.index("a")] == 0.0


def test_recommend_services_fits_the_collaborative_rankers_on_the_population():
    def predictor(recent: pl.DataFrame) -> pl.DataFrame:  # the page head's pages only: the ranker reads none
        return recent.select("user_id", "session_id").with_columns(
            services=pl.lit([], pl.List(pl.String)), service_probabilities=pl.lit([], pl.List(pl.Float64)),
            pages=pl.lit([], pl.List(pl.String)), page_probabilities=pl.lit([], pl.List(pl.Float64)))

    sessions = pl.DataFrame({"user_id": ["ab"], "session_id": ["s"], "activities": [["a;home", "b;home"]],
                             "start": [0]})
    for ranker in ("ease", "item_knn"):
        ranked = recommend_services(predictor, sessions, None, ranker, services=SERVICES, population=WORLD)
        assert ranked["service"][0] == "c" and not set(ranked["service"]) & {"a", "b"}
        with pytest.raises(ValueError, match="every user's used services"):
            recommend_services(predictor, sessions, None, ranker, services=SERVICES)


def _ranked(rows: list[tuple[str, str]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"user_id": pl.String, "service": pl.String}, orient="row")
    return frame.with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32), score=pl.lit(1.0))


def test_coverage_is_the_share_of_the_catalogue_shown_to_scored_users():
    ranked = _ranked([("u", "a"), ("u", "b"), ("v", "b"), ("v", "c"), ("other", "h")])
    assert catalogue_coverage(ranked, pl.Series(["u", "v"]), SERVICES) == pytest.approx(3 / 8)


def test_the_debiased_hit_counts_only_adoptions_popularity_missed():
    popular = _ranked([("u", "a"), ("v", "a"), ("w", "a")])
    adopted = pl.DataFrame({"user_id": ["u", "v", "v", "w"], "service": ["a", "a", "c", "d"]})
    users = pl.Series(["u", "v", "w"])
    # u adopted only what popularity showed: left out; v's c and w's d count
    figures = hit_beyond_popularity(_ranked([("u", "a"), ("v", "c"), ("w", "e")]), adopted, users, popular)
    assert figures == {"hit@5_beyond_popularity": 0.5, "n_users_beyond_popularity": 2}
    assert hit_beyond_popularity(popular, adopted, users, popular)["hit@5_beyond_popularity"] == 0.0
    scores = method_scores({"popularity": popular}, adopted, users, SERVICES)["popularity"]
    assert {"hit@5", "coverage", "hit@5_beyond_popularity", "n_users_beyond_popularity"} <= set(scores)


def test_the_simplest_ranker_within_one_standard_error_serves():
    order = list(METHOD_OF_RANKER)
    assert order[:4] == ["popularity", "markov", "item_knn", "ease"] and order[4] == "count"
    # on 28 users persona's lead of 0.05 is within sqrt(0.65 * 0.35 / 28) = 0.09: popularity serves
    assert simplest_within_one_standard_error({"popularity": 0.60, "persona": 0.65}, 28)[0] == "popularity"
    # on 2,000 users the same lead is beyond 0.011: persona serves
    served, error = simplest_within_one_standard_error({"popularity": 0.60, "persona": 0.65}, 2_000)
    assert served == "persona" and error == pytest.approx(np.sqrt(0.65 * 0.35 / 2_000))


def _stub_predictor(services: list[str]):
    """A fixed stand-in for the model (each session's services in a rotation): the protocol is tested."""

    def predict(recent: pl.DataFrame) -> pl.DataFrame:
        order = recent["session_id"].str.len_chars() % len(services)
        return recent.select("user_id", "session_id").with_columns(
            services=pl.concat_list([pl.lit(services).list.get((order + i) % len(services)) for i in range(8)]),
            service_probabilities=pl.lit([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02]))

    return predict


def test_the_backtest_scores_every_non_test_user_and_never_reads_the_test_split(tiny_world):
    from sessionbert_core.data.serialize import serialize_sessions
    from sessionbert_core.recommend.hit_at_k import Recommenders, hit_at_k
    from sessionbert_core.recommend.ranking import MarkovServices
    from sessionbert_core.recommend.selection import choose_ranker

    events = pl.read_parquet(tiny_world.landing / "events-*.parquet")
    billing = pl.read_parquet(tiny_world.landing / "billing-*.parquet")
    sessions = serialize_sessions(events, billing).with_columns(
        split=pl.col("user_id").hash(seed=1).mod(4).replace_strict({0: "test", 1: "validation"}, default="train"))
    services = sorted(set(events["service"]))
    recommenders = Recommenders(sessionbert=_stub_predictor(services), markov=MarkovServices.fit(sessions),
                                services=services, service_vectors={})
    choice = choose_ranker(sessions, billing, recommenders, min_users=3)
    assert choice["seen_days"] is not None, choice["reason"]
    assert set(choice["backtest"]) == {"popularity", "markov", "item_knn", "ease", "count"}
    assert 0 < choice["n_users_validation"] < choice["n_users"]
    assert "within one standard error" in choice["reason"]
    planted = sessions.with_columns(activities=pl.when(pl.col("split") == "test").then(pl.lit(["planted;page"]))
                                    .otherwise(pl.col("activities")))
    assert choose_ranker(planted, billing, recommenders, min_users=3) == choice
    # Hit@k reports the coverage and the popularity-debiased Hit@5 of every method, EASE and item-kNN among them
    entry = hit_at_k(sessions, billing, recommenders, (6,))["seen_days"]["6"]
    assert {"item_knn", "ease"} <= set(entry)
    assert entry["popularity"]["hit@5_beyond_popularity"] == 0.0
    assert all(0 < entry[m]["coverage"] <= 1 for m in ("item_knn", "ease", "popularity"))
