"""What serves next-activity prediction is chosen on validation: Markov where it is unbeatable, SessionBERT
where it wins, a blend only where it beats both; nothing of the test split reaches the choice."""

from __future__ import annotations

import random

import polars as pl

from sessionbert_core.evaluation.baselines import MarkovChain, transitions
from sessionbert_core.evaluation.choice import BLEND, choose_next_activity
from sessionbert_core.model.inputs import next_activity_inputs

ACTIVITIES = [f"s{i};p{j}" for i in range(6) for j in range(2)]


def _sessions(n: int, seed: int, follows) -> pl.DataFrame:
    """Sessions of three activities, each chosen by `follows(previous, rng)`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        first = rng.choice(ACTIVITIES)
        second = follows(first, rng)
        rows.append({"user_id": f"u{i % 40}", "session_id": f"{seed}-{i}", "context": "",
                     "activities": [first, second, follows(second, rng)], "n_activities": 3})
    return pl.DataFrame(rows)


def _chain(previous: str, rng: random.Random) -> str:
    """A Markov world: the next activity follows from the previous one, nine times in ten."""
    return ACTIVITIES[(ACTIVITIES.index(previous) + 1) % len(ACTIVITIES)] if rng.random() < 0.9 \
        else rng.choice(ACTIVITIES)


def _predictions(sessions: pl.DataFrame, guess) -> pl.DataFrame:
    """A model's top-3 lists for each session's last activity: `guess(inputs row)` first, then two others."""
    inputs = next_activity_inputs(sessions)
    pages = [[guess(row), *[a for a in ACTIVITIES if a != guess(row)][:2]] for row in inputs.iter_rows(named=True)]
    return inputs.select("user_id", "session_id", "previous", "target_service", "target_page").with_columns(
        pages=pl.Series(pages), page_probabilities=pl.lit([0.6, 0.3, 0.1]),
        services=pl.Series([[p.split(";")[0] for p in top] for top in pages]),
        service_probabilities=pl.lit([0.6, 0.3, 0.1]))


def test_markov_serves_where_it_is_unbeatable():
    train, validation, test = (_sessions(400, seed, _chain) for seed in (1, 2, 3))
    wrong = lambda row: ACTIVITIES[(ACTIVITIES.index(row["previous"]) + 5) % len(ACTIVITIES)]  # noqa: E731
    choice = choose_next_activity(train, _predictions(validation, wrong), _predictions(test, wrong))
    assert choice["served"] == {"service": "markov", "page": "markov"}, choice["validation"]
    assert choice["validation"]["page"]["markov"] > 0.85 > choice["validation"]["page"]["sessionbert"]


def test_sessionbert_serves_where_it_wins():
    train, validation, test = (_sessions(400, seed, _chain) for seed in (1, 2, 3))
    right = lambda row: row["target_page"]  # noqa: E731 (a model that knows better than the chain)
    choice = choose_next_activity(train, _predictions(validation, right), _predictions(test, right))
    assert choice["served"] == {"service": "sessionbert", "page": "sessionbert"}, choice["validation"]
    assert choice["test"]["page"][BLEND]["accuracy"] == 1.0  # the blend leans on the model
    assert choice["blend_weight"]["page"] >= 0.5


def test_the_choice_never_reads_the_test_split():
    train, validation, test = (_sessions(300, seed, _chain) for seed in (1, 2, 3))
    half = lambda row: row["target_page"] if int(row["session_id"][2:]) % 2 else row["previous"]  # noqa: E731
    predictions = _predictions(validation, half)
    first = choose_next_activity(train, predictions, _predictions(test, half))
    # every test target and guess replaced: the choice and its weight stay, only the test figures move
    scrambled = _predictions(test, lambda row: "s0;p0").with_columns(target_page=pl.lit("s5;p1"),
                                                                      target_service=pl.lit("s5"))
    second = choose_next_activity(train, predictions, scrambled)
    for key in ("served", "blend_weight", "validation"):
        assert first[key] == second[key]
    assert second["test"]["page"][BLEND]["accuracy"] < first["test"]["page"][BLEND]["accuracy"]


def test_the_markov_chains_probabilities_rank_first_what_it_predicts():
    train = _sessions(300, 1, _chain)
    pairs = transitions(train)
    previous = pl.Series("previous", [*ACTIVITIES, "never;seen"])
    expected = MarkovChain().fit(pairs["previous"], pairs["following"]).predict(previous)
    chain = MarkovChain(smoothing=0.01).fit(pairs["previous"], pairs["following"])
    rows = pl.DataFrame({"row": pl.Series(range(previous.len()), dtype=pl.UInt32), "previous": previous})
    best = (chain.probability(chain.candidates(rows, 3).join(rows, on="row"))
            .sort(["row", "markov", "candidate"], descending=[False, True, False])
            .group_by("row", maintain_order=True).first())
    assert best["candidate"].to_list() == expected.to_list()
    total = chain.probability(rows.join(pl.DataFrame({"candidate": ACTIVITIES}), how="cross"))
    assert total.group_by("row").agg(pl.col("markov").sum())["markov"].round(6).unique().to_list() == [1.0]


def test_a_lead_within_the_validation_noise_goes_to_the_simpler_method():
    from sessionbert_core.evaluation.choice import simplest_within_one_standard_error

    accuracy = {"popularity": 0.2, "markov": 0.70, "sessionbert": 0.74, "sessionbert_markov": 0.75}
    assert simplest_within_one_standard_error(accuracy, 60) == "markov"  # 60 sessions: 5.6 points of noise
    assert simplest_within_one_standard_error(accuracy, 6_000) == "sessionbert_markov"  # 0.6 points
    assert simplest_within_one_standard_error(accuracy | {"sessionbert_markov": 0.745}, 6_000) == "sessionbert"


def test_a_peer_that_wins_on_validation_serves():
    train, validation, test = (_sessions(400, seed, _chain) for seed in (1, 2, 3))
    wrong = lambda row: ACTIVITIES[(ACTIVITIES.index(row["previous"]) + 5) % len(ACTIVITIES)]  # noqa: E731
    right = lambda row: row["target_page"]  # noqa: E731
    peer = _predictions(validation, right).with_columns(predicted_page=pl.col("pages").list.first(),
                                                         predicted_service=pl.col("services").list.first())
    choice = choose_next_activity(train, _predictions(validation, wrong), _predictions(test, wrong),
                                  {"gru4rec": peer.reverse()})  # matched by session, not by row order
    assert choice["served"] == {"service": "gru4rec", "page": "gru4rec"}, choice["validation"]
    assert choice["validation"]["page"]["gru4rec"] == 1.0
