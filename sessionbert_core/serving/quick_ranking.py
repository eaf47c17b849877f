"""The served rankers on the few-rows path (`serving.quick`): `recommend.ranking.recommend_services` for a
request's handful of sessions, row by row in plain Python, with the same candidates, orders, ties and
scores (`tests/test_quick_path.py` holds the two to the same answers, ranker by ranker).

What the served ranker reads of the pipeline's users (who used what, who adopted what, in which cluster)
is indexed once when the server loads, not per request.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import polars as pl

from sessionbert_core.activity import service_of
from sessionbert_core.model.inference import TopK, top_k_arrays
from sessionbert_core.recommend.ranking import CANDIDATE_DEPTH, N_RECOMMENDATIONS, TOP_PAGES, TOP_PER_SESSION
from sessionbert_core.serving.quick import Session, input_text

ANSWER_SCHEMA = {"user_id": pl.String, "persona": pl.String, "cluster": pl.Int64, "persona_source": pl.String,
                 "services": pl.List(pl.String), "scores": pl.List(pl.Float64), "pages": pl.List(pl.String),
                 "sessions": pl.UInt32}
QUICK_RANKERS = ("count", "persona", "markov", "popularity", "item_knn", "ease")  # names, descriptions: frames


@dataclass(frozen=True)
class Ranked:
    """One user's recommendations, best first."""

    services: list[str]
    scores: list[float]
    pages: list[str | None]


@dataclass
class QuickRanker:
    """The served ranker over what it reads of the pipeline's users, indexed once."""

    ranker: str
    services: list[str]  # the catalogue: the service head's labels
    known: pl.DataFrame  # user_id, cluster, persona, used: the served model's known users
    rows: dict[str, int]  # user_id -> row of `known`
    adopted: Counter | None = None  # popularity: service -> adopters
    adopters: Counter | None = None  # persona: (cluster, service) -> adopters among known users
    sizes: Counter | None = None  # persona: cluster -> known users
    markov: dict | None = None  # previous activity -> (services, probabilities); None -> the fallback
    collaborative: object | None = None  # item_knn, ease: the fitted `collaborative.ItemItemRanker`

    @classmethod
    def build(cls, ranker: str, known: pl.DataFrame, services: list[str], adoptions: pl.DataFrame,
              markov=None, collaborative=None) -> QuickRanker | None:
        """The ranker for `RankingInputs` and the fitted collaborative ranker; None for a ranker not served here."""
        if ranker not in QUICK_RANKERS:
            return None
        quick = cls(ranker, services, known, {u: i for i, u in enumerate(known["user_id"].to_list())})
        if ranker == "popularity":
            quick.adopted = Counter(adoptions["service"].to_list())
        if ranker == "persona":
            quick.sizes = Counter(known["cluster"].to_list())
            joined = adoptions.join(known.select("user_id", "cluster"), on="user_id")
            quick.adopters = Counter(zip(joined["cluster"].to_list(), joined["service"].to_list(), strict=True))
        if ranker == "markov":
            table = markov.table
            quick.markov = dict(zip(table["previous"].to_list(), zip(table["services"].to_list(), table[
                "service_probabilities"].to_list(), strict=True), strict=True))
            quick.markov[None] = markov.fallback
        if ranker in ("item_knn", "ease"):
            quick.collaborative = collaborative
        return quick

    def answer(self, sessions: list[Session], top: TopK, posted: pl.DataFrame, inferred: pl.DataFrame
               ) -> pl.DataFrame:
        """`SessionBertRecommender.answer`'s frame: per user of `posted` (user_id, sessions) a persona (kept,
        or `inferred`: user_id, cluster, persona) and the top-5 new services of `rank`."""
        guessed = {u: (c, p) for u, c, p in inferred.select("user_id", "cluster", "persona").iter_rows()}
        rows = []
        for user, count in posted.select("user_id", "sessions").iter_rows():
            known = self.known_row(user) or {}
            cluster, persona = guessed.get(user, (None, None))
            assigned = known.get("persona") is not None
            rows.append({"user_id": user, "persona": known["persona"] if assigned else (persona or ""),
                         "cluster": known["cluster"] if known.get("cluster") is not None else cluster,
                         "persona_source": "assigned" if assigned else "inferred from these sessions",
                         "sessions": count})
        clusters = {r["user_id"]: r["cluster"] for r in rows}
        ranked = self.rank(sessions, top, clusters)
        empty = Ranked([], [], [])
        for row in rows:
            best = ranked.get(row["user_id"], empty)
            row |= {"services": best.services, "scores": best.scores, "pages": best.pages}
        return pl.DataFrame(rows, schema=ANSWER_SCHEMA).select(list(ANSWER_SCHEMA))

    def known_row(self, user: str) -> dict | None:
        row = self.rows.get(user)
        return None if row is None else self.known.row(row, named=True)

    def rank(self, sessions: list[Session], top: TopK, clusters: dict[str, int]) -> dict[str, Ranked]:
        """Each user's top-5 unused services with a landing page; `top`: the model's predictions after each
        of `sessions` (in order), `clusters`: the cluster of each user of the request (persona ranker)."""
        by_user = defaultdict(list)
        for i, session in enumerate(sessions):
            by_user[session.user_id].append(i)
        fallback = most_visited_pages(sessions)
        ranked = {}
        for user, indices in by_user.items():
            row = self.known_row(user)
            used = set((row["used"] or []) if row else [])
            used |= {service_of(a) for i in indices for a in sessions[i].activities}
            best = self._best(user, indices, sessions, top, used, clusters)
            pages = landing_pages(top, indices)
            ranked[user] = Ranked([s for s, _ in best], [score for _, score in best],
                                  [pages.get(s, fallback.get(s)) for s, _ in best])
        return ranked

    def _best(self, user: str, indices: list[int], sessions: list[Session], top: TopK, used: set[str],
              clusters: dict[str, int]) -> list[tuple[str, float]]:
        if self.ranker == "popularity":
            pool = sorted((s for s in self.services if s not in used), key=lambda s: (-self.adopted[s], s))
            return [(s, float(self.adopted[s])) for s in pool[:N_RECOMMENDATIONS]]
        if self.ranker in ("item_knn", "ease"):
            ranker = self.collaborative
            x = np.zeros((1, len(ranker.services)))
            x[0, [i for i, s in enumerate(ranker.services) if s in used]] = 1.0
            _, columns, scores = ranker.top_unused(x, N_RECOMMENDATIONS)
            return [(ranker.services[c], float(v)) for c, v in zip(columns[:N_RECOMMENDATIONS],
                                                                   scores[:N_RECOMMENDATIONS], strict=True)]
        if self.ranker == "markov":
            predicted = [self.markov.get(sessions[i].activities[-1], self.markov[None]) for i in indices]
        else:
            predicted = [(top.services[i], top.service_p[i]) for i in indices]
        found = candidates(predicted, used)
        if self.ranker == "persona":
            cluster = clusters.get(user)
            size = self.sizes[cluster] + sum(1 for u, c in clusters.items() if c == cluster and u not in self.rows)
            rate = {s: (self.adopters[cluster, s] / size if size and cluster is not None else 0.0) for s in found}
            order = sorted(found, key=lambda s: (-rate[s], -found[s][0], -found[s][1], s))
            return [(s, rate[s]) for s in order[:N_RECOMMENDATIONS]]
        order = sorted(found, key=lambda s: (-found[s][0], -found[s][1], s))[:N_RECOMMENDATIONS]
        return [(s, found[s][0] + found[s][1] / (1.0 + found[s][1])) for s in order]


def predict_top(model, tokenizer, sessions: list[Session], in_time, per_pass: int, max_length: int | None,
                bf16: bool | None) -> TopK:
    """The next-activity model's top services and pages after each of `sessions`, as
    `ranking.sessionbert_predictor` has them, `per_pass` sessions a forward pass, `in_time(stage)` before each."""
    texts, parts = [input_text(s) for s in sessions], []
    for offset in range(0, len(texts), per_pass):
        in_time("predicting next activities")
        parts.append(top_k_arrays(model, tokenizer, texts[offset:offset + per_pass], max_length=max_length,
                                  top_k_services=CANDIDATE_DEPTH, top_k_pages=TOP_PAGES, bf16=bf16))
    return parts[0] if len(parts) == 1 else TopK(*(np.concatenate([getattr(p, f) for p in parts])
                                                   for f in ("services", "service_p", "pages", "page_p")))


def candidates(predicted: list[tuple], used: set[str]) -> dict[str, tuple[int, float]]:
    """`ranking.candidates` of one user: each unused predicted service's count of sessions that had it in
    their top TOP_PER_SESSION, and its summed probability (`predicted`: (services, probabilities) per session)."""
    found: dict[str, list] = {}
    for services, probabilities in predicted:
        for position, (service, p) in enumerate(zip(services, probabilities, strict=True)):
            if service is None or str(service) in used:
                continue
            entry = found.setdefault(str(service), [0, 0.0])
            entry[0] += position < TOP_PER_SESSION
            entry[1] += float(p)
    return {s: (c, p) for s, (c, p) in found.items()}


def landing_pages(top: TopK, indices: list[int]) -> dict[str, str]:
    """`ranking.landing_pages`' head part for one user: per service, the page with the most summed probability
    over the user's sessions (`indices` into `top`), ties to the name."""
    summed: dict[str, float] = defaultdict(float)
    for i in indices:
        for page, p in zip(top.pages[i], top.page_p[i], strict=True):
            summed[str(page)] += float(p)
    best: dict[str, str] = {}
    for page in sorted(summed, key=lambda page: (-summed[page], page)):
        best.setdefault(service_of(page), page)
    return best


def most_visited_pages(sessions: list[Session]) -> dict[str, str]:
    """`ranking.most_visited_pages` of the request's sessions: each service's most visited activity."""
    counts = Counter(a for s in sessions for a in s.activities)
    best: dict[str, str] = {}
    for page in sorted(counts, key=lambda page: (-counts[page], page)):
        best.setdefault(service_of(page), page)
    return best
