"""Quality gates: the rules that keep a bad ingest, tokenizer, model or recommendation table from users."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from sessionbert_core.evaluation.choice import PEERS

QUARANTINE_SHARE_LIMIT = 0.05  # of the rows kept or quarantined
UNKNOWN_TOKEN_LIMIT = 0.01
MARGIN_OVER_POPULARITY = 0.0  # accuracy points what serves must reach above popularity, on both heads
MAX_DROP_FROM_CHAMPION = 0.02  # accuracy points a new model may lose against the model in production
# standard errors of the difference what serves may lose against the champion (scored on the test split before the
# new data) or the best peer before the gate holds it back: at one standard error an equally good model is refused
# one time in six (a real access log's 71 test sessions, split anew with each pseudonym key, did), at 1.96 one
# time in forty (a one-sided 2.5 % false alarm). What serves is still chosen on validation by the 1-SE rule
GATE_Z = 1.96


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when it passed)
    figures: dict = field(default_factory=dict)  # what was compared, per head: served, popularity, champion, bounds


def quarantine_share(kept_rows: int, quarantined_rows: int) -> float:
    return quarantined_rows / max(kept_rows + quarantined_rows, 1)


def model_verdict(evaluation: dict, champion: dict | None, margin: float = MARGIN_OVER_POPULARITY,
                  max_drop: float = MAX_DROP_FROM_CHAMPION) -> Verdict:
    """What serves each head (`served_accuracy`) must reach popularity's accuracy plus `margin` (a tie
    passes at margin 0: popularity itself may serve), and lose no more against the champion's
    (`{"service": acc, "page": acc}`, if any) than `max_drop` or GATE_Z times the noise of
    that difference (`noise_of_difference`), whichever is larger; nor fall below the best peer's
    accuracy (`best_peer`) by more than GATE_Z times the noise of that difference: never served worse
    than SASRec, GRU4Rec, V-SKNN or a higher-order Markov chain on the same split. When Markov or
    popularity serves because SessionBERT lost on validation, that is no failure: the user is served
    the better method (and `served_reason` says why)."""
    reasons, figures = [], {}
    for head in ("service", "page"):
        ours = served_accuracy(evaluation, head)
        if ours is None:
            reasons.append(f"{head}: no figure for what serves")
            continue
        popular = evaluation[head]["popularity"]["accuracy"]
        figures[head] = {"served": served_method(evaluation, head), "accuracy": ours, "popularity": popular,
                         "needed": popular + margin, "champion": (champion or {}).get(head)}
        if ours < popular + margin:
            reasons.append(f"{head} accuracy {ours:.4f} of {served_method(evaluation, head)} is below popularity's "
                           f"{popular:.4f} + {margin}")
        peer = best_peer(evaluation, head)
        if peer is not None:
            figures[head]["best_peer"] = {"method": peer[0], "accuracy": peer[1]}
            noise = GATE_Z * noise_of_difference(peer[1], evaluation.get("n_sessions", 0))
            if ours < peer[1] - noise:
                reasons.append(f"{head} accuracy {ours:.4f} of {served_method(evaluation, head)} is below the best "
                               f"peer's, {peer[0]} {peer[1]:.4f}, by more than the noise {noise:.4f}")
        allowed = max(max_drop, GATE_Z * noise_of_difference(ours, evaluation.get("n_sessions", 0)))
        figures[head]["allowed_drop"] = allowed
        if champion and head in champion and ours < champion[head] - allowed:
            reasons.append(f"{head} accuracy {ours:.4f} is more than {allowed:.4f} below the champion's "
                           f"{champion[head]:.4f}")
    return Verdict(not reasons, tuple(reasons), figures)


def best_peer(evaluation: dict, head: str) -> tuple[str, float] | None:
    """The peer (SASRec, GRU4Rec, V-SKNN, higher-order Markov) best on `head` on validation (on test where no
    validation figures are given), with its test accuracy; None without peers. Picked on validation as what serves
    is: the best of four on test would carry a selection bias of its own on a small test split."""
    figures = {m: f["accuracy"] for m, f in evaluation.get(head, {}).items() if m in PEERS}
    if not figures:
        return None
    chosen_on = {m: a for m, a in evaluation.get("validation", {}).get(head, {}).items() if m in figures} or figures
    best = max(chosen_on, key=chosen_on.get)
    return best, figures[best]


def noise_of_difference(accuracy: float, n: int) -> float:
    """One standard error of the difference of two accuracies near `accuracy` on `n` sessions each,
    sqrt(2 p (1 - p) / n): a smaller drop against the champion (measured on another test split, before
    the new data) is no evidence of a regression. A fraction of a point on `small`, several on `tiny`."""
    return math.sqrt(2.0 * accuracy * (1.0 - accuracy) / n) if n > 0 else 0.0


def served_method(evaluation: dict, head: str) -> str:
    """The method serving `head`: the one chosen on validation, or SessionBERT where none was chosen."""
    return evaluation.get("served", {}).get(head, "sessionbert")


def served_accuracy(evaluation: dict, head: str) -> float | None:
    figures = evaluation.get(head, {}).get(served_method(evaluation, head))
    return figures["accuracy"] if figures else None


def recommendation_problems(table: pl.DataFrame, used: pl.DataFrame, limit: int = 5) -> list[str]:
    """What is wrong with a recommendation table: used services, too many rows, ranks not 1..n."""
    problems = []
    clashes = table.join(used.select("user_id", "service"), on=["user_id", "service"], how="semi")
    if clashes.height:
        problems.append(f"{clashes.height} recommendations of services the user already used "
                        f"(e.g. {clashes['user_id'][0]}: {clashes['service'][0]})")
    per_user = table.group_by("user_id").agg(n=pl.len(), ranks=pl.col("rank").sort())
    crowded = per_user.filter(pl.col("n") > limit)
    if crowded.height:
        problems.append(f"{crowded.height} users with more than {limit} recommendations")
    expected = per_user.with_columns(ok=pl.col("ranks") == pl.int_ranges(1, pl.col("n") + 1).cast(pl.List(pl.Int32)))
    if not expected["ok"].all():
        problems.append(f"{(~expected['ok']).sum()} users whose ranks are not 1..n")
    return problems
