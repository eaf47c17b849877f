"""New-service recommendation (paper 4.5, appendices B and C): rankers, baselines and the Hit@k protocol.

Every recommender here produces the same frame, `user_id, rank, service, score`, at most
N_RECOMMENDATIONS rows per user and never a service the user already used, so one scorer serves
SessionBERT, its baselines and the oracle alike.

The paper's count ranker keeps, for each of the last 8 sessions, the service head's top 5; a user
whose sessions all point at services they already use gets fewer than 5 (on the synthetic `small`
world most users did). We keep the top CANDIDATE_DEPTH per session: services are ranked by how
many sessions had them in their top 5, then by summed probability, so the paper's ranking comes
first and the rest of the list is filled by the model's next most probable unused services.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import polars as pl

from sessionbert_core.activity import service_of_expr
from sessionbert_core.data.serialize import recent_sessions, word
from sessionbert_core.evaluation.baselines import MarkovChain, transitions
from sessionbert_core.model.inference import predict_top_k
from sessionbert_core.model.inputs import recommendation_inputs

RECENT_SESSIONS = 8  # the paper's appendix B choice
N_RECOMMENDATIONS = 5
TOP_PER_SESSION = 5  # services counted per session (the paper's top 5)
CANDIDATE_DEPTH = TOP_PAGES = 50  # services (pages) kept per session: short lists filled by probability (landing pages)
USERS_PER_CHUNK = 2_000  # users handled at once: memory bounded by the chunk, not by the number of users
RANKED = {"user_id": pl.String, "rank": pl.Int32, "service": pl.String, "score": pl.Float64}

# sessions -> one row per session with `services` and `service_probabilities` (and optionally pages)
Predictor = Callable[[pl.DataFrame], pl.DataFrame]


# ----------------------------------------------------------------------------------------------
# what a user has used, and what they would do next


def used_services(sessions: pl.DataFrame, billing: pl.DataFrame | None = None) -> pl.DataFrame:
    """`user_id, service`: every service in the users' sessions, and every service they were billed for."""
    seen = sessions.select("user_id", service=pl.col("activities").list.eval(
        service_of_expr(pl.element()))).explode("service")
    if billing is not None and billing.height:  # named as in the sessions' activities
        seen = pl.concat([seen, billing.select("user_id", service=word(pl.col("service")).str.replace_all(";", ":"))])
    return seen.drop_nulls().unique().sort("user_id", "service")


def sessionbert_predictor(model, tokenizer, max_length: int | None = None, batch_size: int = 256,
                          bf16: bool | None = None,
                          top_k_pages: int = TOP_PAGES, compile: bool | None = None) -> Predictor:
    """The fine-tuned model as a Predictor: top-5 services and top pages after each whole session."""

    def predict(sessions: pl.DataFrame) -> pl.DataFrame:
        inputs = recommendation_inputs(sessions)
        top = predict_top_k(model, tokenizer, inputs["input_text"].to_list(), batch_size, max_length,
                            CANDIDATE_DEPTH, top_k_pages, bf16, compile)
        return pl.concat([inputs.select("user_id", "session_id"), top], how="horizontal")

    return predict


def service_vectors(services: list[str], descriptions: dict[str, str] | None,
                    encode: Callable[[list[str]], np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Unit vectors of each service's name (underscores read as spaces) and, when given, its description."""
    vectors = {"names": dict(zip(services, encode([s.replace("_", " ") for s in services]), strict=True))}
    described = [s for s in services if descriptions and descriptions.get(s)]
    if described:
        vectors["descriptions"] = dict(zip(described, encode([descriptions[s] for s in described]), strict=True))
    return vectors


def service_vectors_from_encoder(services: list[str], descriptions: dict[str, str] | None, device: str = "cpu",
                                 bf16: bool | None = None) -> dict[str, dict[str, np.ndarray]]:
    """`service_vectors` under the general-language encoder all-MiniLM-L6-v2 (from its installed package)."""
    from sessionbert_core.personas.embed import embed_texts, load_general_language_encoder

    encoder, tokenizer = load_general_language_encoder(device, bf16)
    return service_vectors(services, descriptions, partial(embed_texts, encoder, tokenizer, pooling="mean", bf16=bf16))


@dataclass(frozen=True)
class MarkovServices:
    """First-order Markov next-service predictor: the services that most often follow an activity.

    Fitted on every transition of the training sessions; an activity never seen falls back to the
    overall most frequent next services.
    """

    table: pl.DataFrame  # previous, services, service_probabilities
    fallback: tuple[list[str], list[float]]

    @classmethod
    def fit(cls, sessions: pl.DataFrame, top_k: int = CANDIDATE_DEPTH) -> MarkovServices:
        """`baselines.MarkovChain` on (previous activity, next service) pairs, kept as its top-k tables."""
        pairs = transitions(sessions)
        if pairs.height == 0:
            raise ValueError("cannot fit a Markov recommender on sessions without a transition")
        table, fallback = MarkovChain().fit(pairs["previous"], pairs["following_service"]).top(top_k)
        return cls(table=table.rename({"candidates": "services", "probabilities": "service_probabilities"}),
                   fallback=fallback)

    def predict(self, sessions: pl.DataFrame) -> pl.DataFrame:
        frame = sessions.select("user_id", "session_id", previous=pl.col("activities").list.last()).join(
            self.table, on="previous", how="left", maintain_order="left")
        return frame.with_columns(
            pl.col("services").fill_null(pl.lit(self.fallback[0], pl.List(pl.String))),
            pl.col("service_probabilities").fill_null(pl.lit(self.fallback[1], pl.List(pl.Float64))),
        ).drop("previous")


# ----------------------------------------------------------------------------------------------
# rankers


def candidates(predictions: pl.DataFrame, used: pl.DataFrame, top: int = TOP_PER_SESSION) -> pl.DataFrame:
    """`user_id, service, count, probability`: every predicted service the user has not used yet.

    `count` is how many of the user's sessions had it among their `top` services, `probability`
    the sum of its predicted probabilities over the sessions that ranked it at all.
    """
    return (
        predictions.select("user_id", "services", "service_probabilities")
        .with_columns(position=pl.int_ranges(0, pl.col("services").list.len()))
        .explode("services", "service_probabilities", "position")
        .rename({"services": "service", "service_probabilities": "probability"})
        .drop_nulls("service")
        .join(used.select("user_id", "service"), on=["user_id", "service"], how="anti")
        .group_by("user_id", "service")
        .agg(count=(pl.col("position") < top).sum().cast(pl.UInt32), probability=pl.col("probability").sum())
    )


def _top(frame: pl.DataFrame, by: list[str], score: pl.Expr, n: int) -> pl.DataFrame:
    """The first `n` services per user sorted by `by` (descending), then by name; ranks 1..n."""
    return (
        frame.sort(["user_id", *by, "service"], descending=[False, *[True] * len(by), False])
        .group_by("user_id", maintain_order=True).head(n)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"), score=score)
        .select(list(RANKED)).cast(RANKED)
    )


def rank_by_count(candidate_services: pl.DataFrame, n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """The paper's rec1: most often in a session's top 5 first, ties (and the fill) by summed probability.

    The score is count + p / (1 + p), p the summed probability: its whole part is the count and it
    orders exactly as the ranking does.
    """
    return _top(candidate_services, ["count", "probability"],
                pl.col("count").cast(pl.Float64) + pl.col("probability") / (1.0 + pl.col("probability")), n)


def observed_adoptions(sessions: pl.DataFrame) -> pl.DataFrame:
    """`user_id, service`: services users started to use after their first active day (what popularity counts)."""
    first_day = sessions.group_by("user_id").agg(first_day=pl.col("day").min())
    first_use = (sessions.select("user_id", "day", service=pl.col("activities").list.eval(
        service_of_expr(pl.element()))).explode("service")
        .group_by("user_id", "service").agg(pl.col("day").min()))
    return (first_use.join(first_day, on="user_id")
            .filter(pl.col("day") > pl.col("first_day")).select("user_id", "service"))


def rank_by_persona(candidate_services: pl.DataFrame, cluster_of_user: pl.DataFrame, adoptions: pl.DataFrame,
                    n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """Persona-aware: what users of the same cluster adopted most, then the count ranking's order.

    `cluster_of_user`: user_id, cluster (from SessionBERT's embeddings); `adoptions`: user_id,
    service adopted. Users whose tasks look alike adopt alike, which the next-service head, looking
    at one session at a time, cannot see. The score is the share of the cluster's users who adopted.
    """
    sizes = cluster_of_user.group_by("cluster").len("users")
    rates = (adoptions.join(cluster_of_user, on="user_id").group_by("cluster", "service").len("adopters")
             .join(sizes, on="cluster").with_columns(rate=pl.col("adopters") / pl.col("users")))
    scored = (candidate_services.join(cluster_of_user, on="user_id", how="left")
              .join(rates.select("cluster", "service", "rate"), on=["cluster", "service"], how="left")
              .with_columns(pl.col("rate").fill_null(0.0)))
    return _top(scored, ["rate", "count", "probability"], pl.col("rate"), n)


def rank_by_similarity(candidate_services: pl.DataFrame, used: pl.DataFrame, vectors: dict[str, np.ndarray],
                       n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """The paper's rec2 / rec3: candidates by mean cosine similarity to the services the user used.

    `vectors` maps a service to a unit vector (of its name or of its description); services
    without a vector score 0, so they rank last.
    """
    names = sorted(vectors)
    if not names:
        return _top(candidate_services.with_columns(similarity=pl.lit(0.0)), ["similarity", "count"],
                    pl.col("similarity"), n)
    index = {s: i for i, s in enumerate(names)}
    matrix = np.stack([vectors[s] for s in names]).astype(np.float32)
    profile = (used.filter(pl.col("service").is_in(names))
               .with_columns(i=pl.col("service").replace_strict(index, return_dtype=pl.Int64))
               .group_by("user_id").agg("i"))
    profiles = {u: matrix[i].mean(axis=0) for u, i in profile.iter_rows()}
    rows = candidate_services.select("user_id", "service").iter_rows()
    similarity = [float(matrix[index[s]] @ profiles[u]) if s in index and u in profiles else 0.0 for u, s in rows]
    return _top(candidate_services.with_columns(similarity=pl.Series(similarity, dtype=pl.Float64)),
                ["similarity", "count"], pl.col("similarity"), n)


def landing_pages(predictions: pl.DataFrame, recommended: pl.DataFrame, fallback: pl.DataFrame) -> pl.DataFrame:
    """A suggested page for each recommended service: the page head's most probable page of that service.

    Page probabilities are summed over the user's recent sessions; a service the page head never
    ranked gets its most visited page overall (`fallback`: service, page).
    """
    by_head = (
        predictions.select("user_id", "pages", "page_probabilities")
        .explode("pages", "page_probabilities")
        .drop_nulls("pages")
        .with_columns(service=service_of_expr(pl.col("pages")))
        .group_by("user_id", "service", "pages").agg(p=pl.col("page_probabilities").sum())
        .sort(["user_id", "service", "p", "pages"], descending=[False, False, True, False])
        .group_by("user_id", "service", maintain_order=True).first()
        .select("user_id", "service", page_from_head="pages")
    )
    return (
        recommended.join(by_head, on=["user_id", "service"], how="left", maintain_order="left")
        .join(fallback.rename({"page": "page_fallback"}), on="service", how="left", maintain_order="left")
        .with_columns(page=pl.coalesce("page_from_head", "page_fallback"))
        .drop("page_from_head", "page_fallback")
    )


def user_slices(sessions: pl.DataFrame, n_users: int):
    """Zero-copy slices of `sessions` holding `n_users` whole users each (sorted by user first if need be)."""
    if not sessions["user_id"].is_sorted():
        sessions = sessions.sort("user_id", maintain_order=True)
    firsts = sessions.select(pl.col("user_id").ne_missing(pl.col("user_id").shift())).to_series()
    starts = [*firsts.arg_true().to_list()[::n_users], sessions.height]
    for begin, end in itertools.pairwise(starts):
        yield sessions.slice(begin, end - begin)


def most_visited_pages(*sessions: pl.DataFrame) -> pl.DataFrame:
    """`service, page`: each service's most visited activity (over one frame of sessions, or several)."""
    counts = [s.select(page=pl.col("activities")).explode("page").drop_nulls().group_by("page").len()
              for s in sessions]
    return (
        pl.concat(counts).group_by("page").agg(pl.col("len").sum())
        .with_columns(service=service_of_expr(pl.col("page")))
        .sort(["service", "len", "page"], descending=[False, True, False])
        .group_by("service", maintain_order=True).first()
        .select("service", "page")
    )


# ----------------------------------------------------------------------------------------------
# baselines


def popularity_ranking(users: pl.Series, used: pl.DataFrame, adoptions: pl.DataFrame, services: list[str],
                       n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """The most adopted services each user has not used yet (`adoptions`: user_id, service adopted)."""
    counts = adoptions.group_by("service").len("adoptions")
    pool = (pl.DataFrame({"service": services}).join(counts, on="service", how="left")
            .with_columns(pl.col("adoptions").fill_null(0)))
    everything = pl.DataFrame({"user_id": users}).join(pool, how="cross")
    unused = everything.join(used, on=["user_id", "service"], how="anti")
    return _top(unused, ["adoptions"], pl.col("adoptions").cast(pl.Float64), n)


def random_ranking(users: pl.Series, used: pl.DataFrame, services: list[str], seed: int,
                   n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """Services not used yet, in a seeded random order."""
    everything = pl.DataFrame({"user_id": users}).join(pl.DataFrame({"service": services}), how="cross")
    unused = everything.join(used, on=["user_id", "service"], how="anti")
    draws = np.random.default_rng(seed).random(unused.height)
    return _top(unused.with_columns(draw=pl.Series(draws)), ["draw"], pl.col("draw"), n)


def probability_ranking(probabilities: pl.DataFrame, used: pl.DataFrame, n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
    """Services by a given probability (`user_id, service, probability`): the oracle on synthetic data."""
    unused = probabilities.join(used, on=["user_id", "service"], how="anti")
    return _top(unused, ["probability"], pl.col("probability"), n)


Ranker = Literal["count", "persona", "names", "descriptions", "markov", "popularity", "item_knn", "ease"]
RANKERS: tuple[str, ...] = get_args(Ranker)


def recommend_services(predictor: Predictor, sessions: pl.DataFrame, billing: pl.DataFrame | None,
                       ranker: str = "count", recent: int = RECENT_SESSIONS,
                       cluster_of_user: pl.DataFrame | None = None,
                       vectors: dict[str, dict[str, np.ndarray]] | None = None,
                       also_used: pl.DataFrame | None = None, markov: MarkovServices | None = None,
                       services: list[str] | None = None, adoptions: pl.DataFrame | None = None,
                       population: pl.DataFrame | None = None) -> pl.DataFrame:
    """`user_id, rank, service, score, page`: every user's top-5 unused services from their recent sessions.

    `ranker`: count (the paper's), persona (needs `cluster_of_user`), names or descriptions (need
    `vectors` of that kind), markov (the count ranking of a Markov chain's next services, needs
    `markov`), popularity (the most adopted services, needs `services`), item_knn or ease (need
    `services` and `population`: user_id, service of every user to fit on, as a request may hold one
    user, or the ranker fitted on them). Landing pages come from the page head, else the most visited
    page. `also_used` (`user_id, service`): used outside the given sessions, never recommended.
    `adoptions` (`user_id, service`, what persona and popularity count): `observed_adoptions(sessions)`
    unless given (the server gives the pipeline's: a request holds only its own users).
    """
    if ranker not in RANKERS:
        raise ValueError(f"ranker must be one of {', '.join(RANKERS)}, not {ranker!r}")
    if ranker == "persona" and cluster_of_user is None:
        raise ValueError("the persona ranker needs each user's cluster")
    if (ranker == "markov" and markov is None) or (ranker == "popularity" and not services):
        raise ValueError(f"the {ranker} ranker needs {'a Markov chain' if ranker == 'markov' else 'the services'}")
    if ranker in ("item_knn", "ease") and (not services or population is None):
        raise ValueError(f"the {ranker} ranker needs the services and every user's used services to fit on "
                         "(`population`)")
    if ranker in ("names", "descriptions") and not (vectors and ranker in vectors):
        raise ValueError(f"the {ranker} ranker needs service {ranker}: none were given (for descriptions, a "
                         "service_catalog.json {service: {description}} in the landing folder)")
    billed = used_services(sessions.clear(), billing)  # (user, service) pairs: small beside the sessions
    if also_used is not None:
        billed = pl.concat([billed, also_used.select("user_id", "service")]).unique()
    chunks = list(user_slices(sessions, USERS_PER_CHUNK))
    if not chunks:
        return pl.DataFrame(schema={**RANKED, "page": pl.String})
    fallback = most_visited_pages(*chunks)
    if adoptions is None and ranker in ("persona", "popularity"):
        adoptions = observed_adoptions(sessions)
    collaborative = fit_collaborative(ranker, population, services)  # fit once, on everyone
    parts = []
    for chunk in chunks:  # zero-copy slices of whole users: memory bounded by the chunk
        users = chunk["user_id"].unique().implode()
        used = pl.concat([used_services(chunk), billed.filter(pl.col("user_id").is_in(users))]).unique()
        recent_chunk = recent_sessions(chunk, recent)
        predictions = predictor(recent_chunk)  # the page head's landing pages, whatever the ranker
        found = candidates(predictions, used)
        if ranker == "count":
            ranked = rank_by_count(found)
        elif ranker == "persona":
            ranked = rank_by_persona(found, cluster_of_user, adoptions)
        elif ranker == "markov":
            ranked = rank_by_count(candidates(markov.predict(recent_chunk), used))
        elif ranker == "popularity":
            ranked = popularity_ranking(chunk["user_id"].unique(maintain_order=True), used, adoptions, services)
        elif collaborative is not None:
            ranked = collaborative.rank(chunk["user_id"].unique(), used)
        else:
            ranked = rank_by_similarity(found, used, vectors[ranker])
        parts.append(landing_pages(predictions, ranked, fallback))
    return pl.concat(parts) if parts else pl.DataFrame(schema={**RANKED, "page": pl.String})


def fit_collaborative(ranker: str, population, services: list[str] | None):
    """The fitted item_knn or ease ranker (`recommend.collaborative`): `population` itself when already fitted
    (the server fits once, not per request); None for the other rankers."""
    from sessionbert_core.recommend.collaborative import fit_ease, fit_item_knn

    fit = {"item_knn": fit_item_knn, "ease": fit_ease}.get(ranker)
    if fit is None or hasattr(population, "rank"):
        return population if fit else None
    return fit(population.select("user_id", "service"), services)


def load_descriptions(path: Path) -> dict[str, str] | None:
    """Service descriptions from a catalog JSON, `{service: {"description": ...}}` or `{service: "..."}`."""
    if not path.exists():
        return None
    catalog = json.loads(path.read_text())
    return {s: (v.get("description") if isinstance(v, dict) else str(v)) for s, v in catalog.items()}


def persona_fit(recommendations: pl.DataFrame, personas: pl.DataFrame, services_of_persona: Callable[[str], set[str]],
                column: str = "persona") -> dict:
    """Share of recommended services that belong to the tasks of the user's persona (`personas`: user_id, column).

    Overall and per persona; users without a persona are left out.
    """
    joined = recommendations.join(personas.select("user_id", column), on="user_id", how="inner").filter(
        pl.col(column).is_not_null() & (pl.col(column) != ""))
    if joined.height == 0:
        return {}
    pairs = joined.select("service", column).iter_rows()
    fits = [service in services_of_persona(persona) for service, persona in pairs]
    joined = joined.with_columns(fit=pl.Series(fits, dtype=pl.Float64))
    per = joined.group_by(column).agg(share=pl.col("fit").mean(), n_users=pl.col("user_id").n_unique()).sort(column)
    return {"share": float(joined["fit"].mean()), "n_users": joined["user_id"].n_unique(),
            "per_persona": {p: {"share": float(s), "n_users": int(n)} for p, s, n in per.iter_rows()}}


def lookup(recommendations: pl.DataFrame, user_id: str) -> pl.DataFrame:
    """One user's rows of the recommendation table, by rank; a clear error for an unknown user."""
    rows = recommendations.filter(pl.col("user_id") == user_id).sort("rank")
    if rows.height == 0:
        known = recommendations["user_id"].n_unique()
        raise KeyError(f"user {user_id!r} has no recommendations ({known} users have; "
                       "a user who already used every candidate service gets none)")
    return rows
