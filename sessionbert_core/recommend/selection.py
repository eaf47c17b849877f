"""Which ranker the recommendation table serves: a Hit@k backtest on the validation users."""

from __future__ import annotations

from dataclasses import replace

import polars as pl

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
    from sessionbert_core.recommend.hit_at_k import hit_at_k
    from sessionbert_core.recommend.ranking import RECENT_SESSIONS

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
