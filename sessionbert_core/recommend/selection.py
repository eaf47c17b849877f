"""Which ranker the recommendation table serves: a time-based Hit@k backtest over every non-test user.

The choice used to read the validation users alone: on a world nobody here tuned to that was 28 adopters,
and the persona ranker it picked then lost to popularity on 292 test adopters (Hit@5 0.596 against
0.623). A choice among eight rankers needs hundreds of users, so every user of the train and validation
splits with enough history takes part, each one's first D active days seen and the rest unseen: the
rankers never read a user's later days, whichever split the user is in.

Caveat: the fine-tuned model read the train users' sessions as next-activity examples (never with a
user identity, never as an adoption target), so on them the SessionBERT rankers may look a little better
than they are. The output keeps the figures over validation users alone beside those over every
non-test user, with the n of each, so the two can be compared.
"""

from __future__ import annotations

import math
from dataclasses import replace

import polars as pl

# Hit@k method name -> the table's ranker of the same recommendations, simplest first (the one-standard-error
# rule serves the first within reach of the best): popularity (one count per service, the same for everyone),
# Markov (one transition table), item-kNN (service co-occurrence, nothing fitted beyond k), EASE (a fitted
# regression with its L2), then SessionBERT's count ranker and those built on it (clusters, an encoder)
SERVABLE_RANKERS = {"popularity": "popularity", "markov": "markov", "item_knn": "item_knn", "ease": "ease",
                    "sessionbert": "count", "sessionbert_persona": "persona", "sessionbert_names": "names",
                    "sessionbert_descriptions": "descriptions"}
METHOD_OF_RANKER = {ranker: method for method, ranker in SERVABLE_RANKERS.items()}
DEFAULT_RANKER = "count"  # the paper's, where no backtest can be made
MIN_BACKTEST_USERS = 20  # non-test users who adopt something: below it the figures are noise


def choose_ranker(sessions: pl.DataFrame, billing: pl.DataFrame | None, recommenders,
                  seen_days: tuple[int, ...] = (10, 6, 12), min_users: int = MIN_BACKTEST_USERS,
                  recent: int | None = None) -> dict:
    """The ranker the recommendation table serves, from a Hit@k backtest on every non-test user.

    `sessions` is `session_splits` (the test split's users are left out entirely); `recommenders` is
    `recommend.load_recommenders`' bundle; `recent` the recommendation window (None: the paper's 8); its
    synthetic truth (the oracle, services used before the data began) is left out, so the choice reads
    only what real data has. The first of `seen_days` with `min_users` adopters is used. Returns `ranker`
    (the table's name), `served_ranker` (its Hit@k method name), `seen_days`, `n_users` and `backtest`
    ({ranker: figures} over every non-test adopter: what the choice reads), `n_users_validation` and
    `validation` (the same over validation adopters alone), `standard_error` and `reason`.
    """
    from sessionbert_core.recommend.hit_at_k import method_scores, rankings, split_seen_unseen
    from sessionbert_core.recommend.ranking import RECENT_SESSIONS

    bundle = replace(recommenders, oracle=None, used_before=None)
    sessions = sessions.filter(pl.col("split") != "test")  # not even the test users' seen days
    validation_users = sessions.filter(pl.col("split") == "validation")["user_id"].unique()
    for days in seen_days:
        split = split_seen_unseen(sessions, billing, days)
        adopters = split.adopted["user_id"].unique()
        if adopters.len() >= min_users:
            break
    else:
        return _ranker_choice(DEFAULT_RANKER, None, adopters.len(), {}, f"fewer than {min_users} non-test users "
                              f"adopt a service after their first {'/'.join(map(str, seen_days))} active days: "
                              "no backtest, the paper's count ranker serves")
    ranked = {m: frame for m, frame in rankings(split, bundle, recent or RECENT_SESSIONS).items()
              if m in SERVABLE_RANKERS}
    figures = _by_ranker(method_scores(ranked, split.adopted, adopters, bundle.services))
    served, error = simplest_within_one_standard_error({r: f["hit@5"] for r, f in figures.items()}, adopters.len())
    best = max(figures, key=lambda r: figures[r]["hit@5"])
    reason = (f"{served}: Hit@5 {figures[served]['hit@5']:.4f} at D = {days} over {adopters.len()} non-test users, "
              f"the simplest within one standard error ({error:.4f}) of the best, {best} "
              f"{figures[best]['hit@5']:.4f}")
    on_validation = adopters.filter(adopters.is_in(validation_users.implode()))
    validation = _by_ranker(method_scores(ranked, split.adopted, on_validation, bundle.services)) \
        if on_validation.len() else {}
    return _ranker_choice(served, days, adopters.len(), figures, reason) | {
        "standard_error": error, "n_users_validation": on_validation.len(), "validation": validation}


def simplest_within_one_standard_error(hit5: dict[str, float], n: int) -> tuple[str, float]:
    """The first ranker of SERVABLE_RANKERS' order whose Hit@5 is within sqrt(p (1 - p) / n) of the best p,
    and that standard error: `evaluation.choice`'s rule for next activity, over this order.

    A lead smaller than the best figure's sampling error is mostly noise, so the simpler ranker serves.
    """
    best = max(hit5.values())
    error = math.sqrt(best * (1.0 - best) / max(n, 1))
    return next(r for r in METHOD_OF_RANKER if r in hit5 and hit5[r] >= best - error - 1e-12), error


def _by_ranker(figures: dict[str, dict]) -> dict[str, dict]:
    return {SERVABLE_RANKERS[m]: f for m, f in figures.items() if m in SERVABLE_RANKERS}


def _ranker_choice(ranker: str, days: int | None, n_users: int, figures: dict, reason: str) -> dict:
    return {"ranker": ranker, "served_ranker": METHOD_OF_RANKER[ranker], "seen_days": days, "n_users": n_users,
            "backtest": figures, "n_users_validation": 0, "validation": {}, "standard_error": None,
            "reason": reason}
