"""What serves: every candidate of a product compared on the validation split, never on test.

Next activity: the candidates are the most popular target, first-order Markov, the peers a recommender-systems
engineer would pick instead (`sessionbert_core.peers`: a higher-order Markov chain with back-off, V-SKNN, GRU4Rec,
SASRec), SessionBERT alone, and SessionBERT blended with Markov: `w * P_model + (1 - w) * P_markov` over the union
of both top lists, the weight `w` fit on validation from BLEND_WEIGHTS (0.1 to 0.9). The simplest method within one
standard error of the best validation accuracy serves. On little data Markov is hard to beat, and a user
trying the tool on a small sample must not be served something worse than it; the model's own
figures stay reported as `sessionbert` beside whatever serves.

Recommendations: `sessionbert_core.recommend.selection` (every ranker backtested over every non-test user, the
same one-standard-error rule).
"""

from __future__ import annotations

import math

import polars as pl

from sessionbert_core.evaluation.baselines import MarkovChain, PopularityBaseline, transitions
from sessionbert_core.evaluation.next_activity import scores
from sessionbert_core.model.inputs import next_activity_inputs

# head: (top-list column, its probabilities, target column, the transitions' column it follows)
HEADS = {"service": ("services", "service_probabilities", "target_service", "following_service"),
         "page": ("pages", "page_probabilities", "target_page", "following")}
BLEND = "sessionbert_markov"
# SessionBERT's share: a blend of both (0 would be Markov alone and 1 the model alone, candidates of their own)
BLEND_WEIGHTS = tuple(i / 10 for i in range(1, 10))
# simplest first: a method serves only where it beats every simpler one by more than the validation
# figure's standard error (the blend only where it beats both of its parts)
PEERS = ("markov_backoff", "vsknn", "gru4rec", "sasrec")  # simplest first
METHODS = ("popularity", "markov", *PEERS, "sessionbert", BLEND)
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


def choose_next_activity(train: pl.DataFrame, validation: pl.DataFrame, test: pl.DataFrame,
                         peers: dict[str, pl.DataFrame] | None = None) -> dict:
    """The served method per head, chosen on `validation`, and the blend's test figures.

    `train` is the train split's sessions (the baselines are fit on it); `validation` and `test` are
    `predict_next_activity` outputs of those splits; `peers` the peers' predictions of the validation split (the
    same frame, by peer name). Returns `served` ({head: method}), `blend_weight` ({head: w}), `validation`
    ({head: {method: accuracy}}) and `test` ({head: {BLEND: scores}}). Nothing of `test` but its inputs reaches
    a choice.
    """
    peers = {name: _aligned(validation, frame) for name, frame in (peers or {}).items()}
    pairs, fit_on = transitions(train), next_activity_inputs(train)
    result: dict = {"served": {}, "blend_weight": {}, "validation": {}, "test": {}}
    for head, (items, _, target, following) in HEADS.items():
        chain = MarkovChain().fit(pairs["previous"], pairs[following])
        predicted = {
            "popularity": PopularityBaseline().fit(fit_on[target]).predict(validation["previous"]),
            "markov": chain.predict(validation["previous"]),
            "sessionbert": validation[items].list.first(),
        } | {name: frame[f"predicted_{head}"] for name, frame in peers.items()}
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


def _aligned(predictions: pl.DataFrame, peer: pl.DataFrame) -> pl.DataFrame:
    """A peer's predictions in the rows' order of the model's (the same protocol rows, matched by session)."""
    keys = ["user_id", "session_id"]
    aligned = predictions.select(keys).join(peer.select(*keys, "predicted_service", "predicted_page"), on=keys,
                                            how="left", maintain_order="left")
    if aligned.height != predictions.height:
        raise ValueError("a peer's predictions do not match the protocol's sessions one to one")
    return aligned


def simplest_within_one_standard_error(accuracy: dict[str, float], n: int) -> str:
    """The first of METHODS whose validation accuracy is within one standard error of the best one's.

    The one-standard-error rule: on a few dozen validation sessions a more complex method's lead is
    mostly noise (one session is several points), so the simpler one serves unless the lead is larger
    than the best figure's sampling error, sqrt(p (1 - p) / n); on thousands of sessions it is a
    fraction of a point, and the best method serves.
    """
    best = max(accuracy.values())
    error = math.sqrt(best * (1.0 - best) / max(n, 1))
    return next(m for m in METHODS if m in accuracy and accuracy[m] >= best - error - 1e-12)


def _accuracy(truth: pl.Series, predicted: pl.Series) -> float:
    return float((truth == predicted).mean()) if truth.len() else 0.0
