"""What serves: every candidate of a product compared on the validation split, never on test.

Next activity: the candidates are the most popular target, first-order Markov, SessionBERT alone, and SessionBERT
blended with Markov: `w * P_model + (1 - w) * P_markov` over the union of both top lists, the
weight `w` fit on validation from BLEND_WEIGHTS (0.1 to 0.9). The simplest method within one
standard error of the best validation accuracy serves. On little data Markov is hard to beat, and a user
trying the tool on a small sample must not be served something worse than it; the model's own
figures stay reported as `sessionbert` beside whatever serves.

Recommendations: every ranker the table can serve is backtested on validation users, whose first D
active days are seen and the rest unseen (the Hit@k protocol, applied to them instead of the test
users); the best Hit@5 serves, MRR breaking ties, then the simpler ranker.
"""

from __future__ import annotations

import math
from dataclasses import replace

import polars as pl

from sessionbert_core.baselines import MarkovChain, PopularityBaseline, transitions
from sessionbert_core.evaluate import next_activity_inputs, scores

# head: (top-list column, its probabilities, target column, the transitions' column it follows)
HEADS = {"service": ("services", "service_probabilities", "target_service", "following_service"),
         "page": ("pages", "page_probabilities", "target_page", "following")}
BLEND = "sessionbert_markov"
# SessionBERT's share: a blend of both (0 would be Markov alone and 1 the model alone, candidates of their own)
BLEND_WEIGHTS = tuple(i / 10 for i in range(1, 10))
# simplest first: a method serves only where it beats every simpler one by more than the validation
# figure's standard error (the blend only where it beats both of its parts)
METHODS = ("popularity", "markov", "sessionbert", BLEND)
CANDIDATES_PER_SOURCE = 20


def blend_candidates(predictions: pl.DataFrame, chain: MarkovChain, head: str) -> pl.DataFrame:
    """`row, previous, candidate, sessionbert, markov`: each prediction row's candidates (the model's top
    list, Markov's and popularity's) with both probabilities (the model's is 0 outside its top list)."""
    items, probabilities, _, _ = HEADS[head]
    rows = predictions.select(row=pl.int_range(pl.len(), dtype=pl.UInt32), previous="previous")
    model = (predictions.select(row=pl.int_range(pl.len(), dtype=pl.UInt32), candidate=items,
                                sessionbert=probabilities).explode("candidate", "sessionbert"))
    candidates = pl.concat([model.select("row", "candidate"),
                            chain.candidates(rows, CANDIDATES_PER_SOURCE)]).unique()
    joined = (candidates.join(rows, on="row").join(model, on=["row", "candidate"], how="left")
              .with_columns(pl.col("sessionbert").fill_null(0.0)))
    return chain.probability(joined)


def blended(candidates: pl.DataFrame, weight: float) -> pl.Series:
    """Each row's most probable candidate under the blend, in row order."""
    score = weight * pl.col("sessionbert") + (1.0 - weight) * pl.col("markov")
    return (candidates.with_columns(score=score).sort(["row", "score", "candidate"], descending=[False, True, False])
            .group_by("row", maintain_order=True).first()["candidate"])


def choose_next_activity(train: pl.DataFrame, validation: pl.DataFrame, test: pl.DataFrame) -> dict:
    """The served method per head, chosen on `validation`, and the blend's test figures.

    `train` is the train split's sessions (the baselines are fit on it); `validation` and `test` are
    `predict_next_activity` outputs of those splits. Returns `served` ({head: method}),
    `blend_weight` ({head: w}), `validation` ({head: {method: accuracy}}) and `test` ({head:
    {BLEND: scores}}). Nothing of `test` but its inputs reaches a choice.
    """
    pairs, fit_on = transitions(train), next_activity_inputs(train)
    result: dict = {"served": {}, "blend_weight": {}, "validation": {}, "test": {}}
    for head, (items, _, target, following) in HEADS.items():
        chain = MarkovChain().fit(pairs["previous"], pairs[following])
        predicted = {
            "popularity": PopularityBaseline().fit(fit_on[target]).predict(validation["previous"]),
            "markov": chain.predict(validation["previous"]),
            "sessionbert": validation[items].list.first(),
        }
        accuracy = {method: _accuracy(validation[target], guess) for method, guess in predicted.items()}
        candidates = blend_candidates(validation, chain, head)
        by_weight = {w: _accuracy(validation[target], blended(candidates, w)) for w in BLEND_WEIGHTS}
        weight = max(by_weight, key=by_weight.get)  # the first best: a tie goes to the lighter model share
        accuracy[BLEND] = by_weight[weight]
        served = simplest_within_one_standard_error(accuracy, validation.height)
        result["served"][head], result["blend_weight"][head] = served, weight
        result["validation"][head] = {m: round(a, 6) for m, a in accuracy.items()}
        result["test"][head] = {BLEND: scores(test[target], blended(blend_candidates(test, chain, head), weight))}
    return result


def simplest_within_one_standard_error(accuracy: dict[str, float], n: int) -> str:
    """The first of METHODS whose validation accuracy is within one standard error of the best one's.

    The one-standard-error rule: on a few dozen validation sessions a more complex method's lead is
    mostly noise (one session is several points), so the simpler one serves unless the lead is larger
    than the best figure's sampling error, sqrt(p (1 - p) / n); on thousands of sessions it is a
    fraction of a point, and the best method serves.
    """
    best = max(accuracy.values())
    error = math.sqrt(best * (1.0 - best) / max(n, 1))
    return next(m for m in METHODS if accuracy[m] >= best - error - 1e-12)


def _accuracy(truth: pl.Series, predicted: pl.Series) -> float:
    return float((truth == predicted).mean()) if truth.len() else 0.0


# Hit@k method name -> the table's ranker of the same recommendations, simplest first (ties go to it)
SERVABLE_RANKERS = {"popularity": "popularity", "markov": "markov", "sessionbert": "count",
                    "sessionbert_persona": "persona", "sessionbert_names": "names",
                    "sessionbert_descriptions": "descriptions"}
METHOD_OF_RANKER = {ranker: method for method, ranker in SERVABLE_RANKERS.items()}
DEFAULT_RANKER = "count"  # the paper's, where no backtest can be made
MIN_BACKTEST_USERS = 20  # validation users who adopt something: below it the figures are noise


def choose_ranker(sessions: pl.DataFrame, billing: pl.DataFrame | None, recommenders,
                  seen_days: tuple[int, ...] = (10, 6, 12), min_users: int = MIN_BACKTEST_USERS,
                  recent: int | None = None) -> dict:
    """The ranker the recommendation table serves, from a Hit@k backtest on the validation split's users.

    `sessions` is `session_splits` (the test split's sessions are left out); `recommenders` is
    `recommend.load_recommenders`' bundle; `recent` the recommendation window (sessions a
    recommendation reads; None: the paper's 8); its synthetic truth (the oracle, services
    used before the data began) is left out, so the choice reads only what real data has. The first
    of `seen_days` with `min_users` adopters is used. Returns `ranker` (the table's name),
    `served_ranker` (its Hit@k method name), `seen_days`, `n_users`, `validation` ({ranker: Hit@k
    figures}) and `reason`.
    """
    from sessionbert_core.recommend import RECENT_SESSIONS, hit_at_k

    bundle = replace(recommenders, oracle=None, used_before=None)
    sessions = sessions.filter(pl.col("split") != "test")  # not even the test users' seen days
    users = sessions.filter(pl.col("split") == "validation")["user_id"].unique()
    for days in seen_days:
        entry = hit_at_k(sessions, billing, bundle, (days,), recent or RECENT_SESSIONS,
                         scored_users=users)["seen_days"][str(days)]
        if entry["n_users"] >= min_users:
            break
    else:
        return _ranker_choice(DEFAULT_RANKER, None, entry["n_users"], {},
                              f"fewer than {min_users} validation users adopt a service after their first "
                              f"{'/'.join(map(str, seen_days))} active days: no backtest, the paper's count "
                              "ranker serves")
    figures = {SERVABLE_RANKERS[m]: f for m, f in entry.items() if m in SERVABLE_RANKERS}
    served = max(figures, key=lambda r: (figures[r]["hit@5"], figures[r]["mrr"]))  # the first best, simplest first
    runner_up = max((r for r in figures if r != served), key=lambda r: figures[r]["hit@5"], default=None)
    reason = f"{served}: validation Hit@5 {figures[served]['hit@5']:.4f} at D = {days} over {entry['n_users']} users"
    if runner_up:
        reason += f", next {runner_up} {figures[runner_up]['hit@5']:.4f}"
    return _ranker_choice(served, days, entry["n_users"], figures, reason)


def _ranker_choice(ranker: str, days: int | None, n_users: int, figures: dict, reason: str) -> dict:
    return {"ranker": ranker, "served_ranker": METHOD_OF_RANKER[ranker], "seen_days": days, "n_users": n_users,
            "validation": figures, "reason": reason}
