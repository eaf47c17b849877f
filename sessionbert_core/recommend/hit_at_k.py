"""The Hit@k protocol (paper Table 6): seen and unseen days per user, every method scored."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
from transformers import AutoTokenizer

from sessionbert_core.data.serialize import recent_sessions
from sessionbert_core.recommend.collaborative import fit_ease, fit_item_knn
from sessionbert_core.recommend.ranking import (
    RECENT_SESSIONS,
    MarkovServices,
    Predictor,
    candidates,
    observed_adoptions,
    popularity_ranking,
    probability_ranking,
    random_ranking,
    rank_by_count,
    rank_by_persona,
    rank_by_similarity,
    service_vectors_from_encoder,
    sessionbert_predictor,
    used_services,
)

SEEN_DAYS = (6, 10, 12)


# ----------------------------------------------------------------------------------------------
# the Hit@k protocol


@dataclass(frozen=True)
class SeenUnseen:
    """One user-level split: what the recommenders may read, and what they are scored against."""

    seen: pl.DataFrame  # sessions of the seen days (the only input)
    used: pl.DataFrame  # user_id, service: used in the seen days (sessions or billing)
    adopted: pl.DataFrame  # user_id, service: first used in the unseen days
    cutoffs: pl.DataFrame  # user_id, last_seen_day (date), last_day (date)


def split_seen_unseen(sessions: pl.DataFrame, billing: pl.DataFrame | None, seen_days: int,
                      used_before: pl.DataFrame | None = None) -> SeenUnseen:
    """Each user's first `seen_days` active days are seen, the later ones unseen.

    Only users with at least `seen_days` active days and at least one more take part. Nothing of a
    user's unseen days reaches `seen` or `used`: sessions are cut by day, and billing after the last
    seen day is dropped. (A session's context only looks back, so seen sessions hold no later data.)
    `used_before` (user_id, service), known only on synthetic data, holds services used before the
    data began: they are not adoptions, though the recommenders cannot know it.
    """
    days = sessions.select("user_id", "day").unique().sort("user_id", "day")
    cutoffs = (
        days.group_by("user_id", maintain_order=True)
        .agg(n_days=pl.len(), last_seen_day=pl.col("day").get(seen_days - 1, null_on_oob=True),
             last_day=pl.col("day").last())
        .filter(pl.col("n_days") > seen_days)
        .drop("n_days")
    )
    tagged = sessions.join(cutoffs, on="user_id", how="inner")
    seen = tagged.filter(pl.col("day") <= pl.col("last_seen_day")).drop("last_seen_day", "last_day")
    unseen = tagged.filter(pl.col("day") > pl.col("last_seen_day"))
    seen_billing = None
    if billing is not None and billing.height:
        seen_billing = (billing.join(cutoffs, on="user_id", how="inner")
                        .filter(pl.col("date") <= pl.col("last_seen_day")))
    used = used_services(seen, seen_billing)
    adopted = used_services(unseen).join(used, on=["user_id", "service"], how="anti")
    if used_before is not None:
        adopted = adopted.join(used_before.select("user_id", "service"), on=["user_id", "service"], how="anti")
    return SeenUnseen(seen=seen, used=used, adopted=adopted, cutoffs=cutoffs)


def hit_metrics(ranked: pl.DataFrame, adopted: pl.DataFrame, users: pl.Series) -> dict[str, float]:
    """Hit@3, Hit@5, NDCG@5 and MRR over `users` (binary relevance: the service was adopted)."""
    targets = adopted.filter(pl.col("user_id").is_in(users.implode())).group_by("user_id").agg(n_adopted=pl.len())
    hits = (ranked.filter(pl.col("rank") <= 5)
            .join(adopted.with_columns(hit=pl.lit(True)), on=["user_id", "service"], how="left")
            .with_columns(pl.col("hit").fill_null(False)))
    per_user = (
        hits.group_by("user_id").agg(
            hit3=(pl.col("hit") & (pl.col("rank") <= 3)).any(),
            hit5=pl.col("hit").any(),
            dcg=(pl.col("hit").cast(pl.Float64) / (pl.col("rank").cast(pl.Float64) + 1.0).log(2)).sum(),
            rr=(1.0 / pl.col("rank").filter(pl.col("hit")).min().cast(pl.Float64)).fill_null(0.0))
    )
    scored = targets.join(per_user, on="user_id", how="left").with_columns(
        pl.col("hit3", "hit5").fill_null(False), pl.col("dcg", "rr").fill_null(0.0),
        idcg=pl.col("n_adopted").map_elements(lambda m: sum(1.0 / math.log2(i + 2) for i in range(min(m, 5))),
                                              return_dtype=pl.Float64))
    if scored.height == 0:
        return {"hit@3": float("nan"), "hit@5": float("nan"), "ndcg@5": float("nan"), "mrr": float("nan")}
    return {
        "hit@3": float(scored["hit3"].cast(pl.Float64).mean()),
        "hit@5": float(scored["hit5"].cast(pl.Float64).mean()),
        "ndcg@5": float((scored["dcg"] / scored["idcg"]).mean()),
        "mrr": float(scored["rr"].mean()),
    }


def catalogue_coverage(ranked: pl.DataFrame, users: pl.Series, services: list[str]) -> float:
    """Share of the catalogue (`services`) in the top 5 of at least one of `users`: how much of it a method
    ever shows. Popularity shows a handful to everyone; a ranker that reads the user spreads wider."""
    shown = ranked.filter((pl.col("rank") <= 5) & pl.col("user_id").is_in(users.implode()))["service"]
    return shown.filter(shown.is_in(services)).n_unique() / len(services) if services else float("nan")


def hit_beyond_popularity(ranked: pl.DataFrame, adopted: pl.DataFrame, users: pl.Series,
                          popular: pl.DataFrame) -> dict[str, float]:
    """The popularity-debiased Hit@5: Hit@5 counting, per user, only adoptions that popularity's top 5
    (`popular`) missed for that user; users left with none are left out (`n_users_beyond_popularity`).

    Popularity scores 0 on it by construction; a method that only repeats the most adopted services does
    too, so it tells whether a ranker knows something about the user that the crowd does not.
    """
    beyond = (adopted.filter(pl.col("user_id").is_in(users.implode()))
              .join(popular.filter(pl.col("rank") <= 5), on=["user_id", "service"], how="anti"))
    left = beyond["user_id"].unique()
    if left.len() == 0:
        return {"hit@5_beyond_popularity": float("nan"), "n_users_beyond_popularity": 0}
    hit = ranked.filter(pl.col("rank") <= 5).join(beyond, on=["user_id", "service"])["user_id"].n_unique()
    return {"hit@5_beyond_popularity": hit / left.len(), "n_users_beyond_popularity": left.len()}


def method_scores(ranked: dict[str, pl.DataFrame], adopted: pl.DataFrame, users: pl.Series,
                  services: list[str]) -> dict[str, dict[str, float]]:
    """Every method's Hit@k figures over `users`, with its catalogue coverage and popularity-debiased Hit@5."""
    return {method: hit_metrics(frame, adopted, users) | {"coverage": catalogue_coverage(frame, users, services)}
            | hit_beyond_popularity(frame, adopted, users, ranked["popularity"]) for method, frame in ranked.items()}


@dataclass(frozen=True)
class Recommenders:
    """What the Hit@k protocol compares: SessionBERT's predictor and the baselines' ingredients."""

    sessionbert: Predictor
    markov: MarkovServices
    services: list[str]  # every service a recommender may propose (the service head's labels)
    service_vectors: dict[str, dict[str, np.ndarray]]  # "names" / "descriptions" -> service -> unit vector
    oracle: Callable[[pl.DataFrame], pl.DataFrame] | None = None  # cutoffs -> user_id, service, probability
    used_before: pl.DataFrame | None = None  # synthetic truth: services used before the data began
    clusters: Callable[[pl.DataFrame], pl.DataFrame] | None = None  # seen sessions -> user_id, cluster
    seed: int = 0


def rankings(split: SeenUnseen, recommenders: Recommenders, recent: int = RECENT_SESSIONS,
             scored_users: pl.Series | None = None) -> dict[str, pl.DataFrame]:
    """Every method's top-5 for the users of one seen/unseen split, from the seen days only.

    The model-based methods predict only for `scored_users` (all eligible users when None): the
    others need every user's seen days, the predictions do not.
    """
    inputs = recent_sessions(split.seen, recent)
    if scored_users is not None:
        inputs = inputs.filter(pl.col("user_id").is_in(scored_users.implode()))
    users = split.cutoffs["user_id"]
    adoptions = observed_adoptions(split.seen)
    found = candidates(recommenders.sessionbert(inputs), split.used)
    ranked = {
        "sessionbert": rank_by_count(found),
        "popularity": popularity_ranking(users, split.used, adoptions, recommenders.services),
        "markov": rank_by_count(candidates(recommenders.markov.predict(inputs), split.used)),
        "random": random_ranking(users, split.used, recommenders.services, recommenders.seed),
        # the collaborative rankers fit on the seen days' used services (billing too), nothing later
        "item_knn": fit_item_knn(split.used, recommenders.services).rank(users, split.used),
        "ease": fit_ease(split.used, recommenders.services, seed=recommenders.seed).rank(users, split.used),
    }
    for kind, vectors in recommenders.service_vectors.items():
        ranked[f"sessionbert_{kind}"] = rank_by_similarity(found, split.used, vectors)
    if recommenders.clusters is not None:
        ranked["sessionbert_persona"] = rank_by_persona(found, recommenders.clusters(split.seen), adoptions)
    if recommenders.oracle is not None:
        ranked["oracle"] = probability_ranking(recommenders.oracle(split.cutoffs), split.used)
    return ranked


def hit_at_k(sessions: pl.DataFrame, billing: pl.DataFrame | None, recommenders: Recommenders,
             seen_days: tuple[int, ...] = SEEN_DAYS, recent: int = RECENT_SESSIONS,
             scored_users: pl.Series | None = None) -> dict:
    """Hit@k (docs/design.md#hitk): for each D, every method's figures over users who adopt something
    (`method_scores`: Hit@3, Hit@5, NDCG@5, MRR, catalogue coverage, popularity-debiased Hit@5).

    `scored_users` limits the figures to those users (the test split's: no session of theirs was
    trained on); every eligible user's seen days still feed popularity and the clusters.
    """
    result: dict = {"seen_days": {}, "recommendation_sessions": recent}
    for days in seen_days:
        split = split_seen_unseen(sessions, billing, days, recommenders.used_before)
        adopters = split.adopted["user_id"].unique()
        eligible = split.cutoffs["user_id"]
        if scored_users is not None:
            adopters = adopters.filter(adopters.is_in(scored_users.implode()))
            eligible = eligible.filter(eligible.is_in(scored_users.implode()))
        entry: dict = {"n_users": adopters.len(), "n_users_eligible": eligible.len()}
        if adopters.len():
            entry |= method_scores(rankings(split, recommenders, recent, scored_users), split.adopted, adopters,
                                   recommenders.services)
        result["seen_days"][str(days)] = entry
    return result


def load_recommenders(finetuned_model: Path, sessions: pl.DataFrame, embeddings: pl.DataFrame, k: int,
                      n_recent_for_clusters: int, descriptions: dict[str, str] | None = None,
                      world_root: Path | None = None, device: str = "cpu", bf16: bool | None = None,
                      seed: int = 0) -> Recommenders:
    """Everything the Hit@k protocol compares, from the artifacts: the fine-tuned model, a Markov chain
    fitted on the train split, service vectors from the general-language encoder, SessionBERT clusters
    and, given a synthetic world's root, the oracle."""
    from sessionbert_core.model.networks import load_next_activity_model
    from sessionbert_core.personas.segment import cluster_users
    from sessionbert_core.world.truth import adoption_oracle, used_before

    model = load_next_activity_model(finetuned_model, device, bf16)
    tokenizer = AutoTokenizer.from_pretrained(finetuned_model)
    services = list(model.config.service_labels)
    return Recommenders(
        sessionbert=sessionbert_predictor(model, tokenizer, bf16=bf16),
        markov=MarkovServices.fit(sessions.filter(pl.col("split") == "train")),
        services=services,
        service_vectors=service_vectors_from_encoder(services, descriptions, device, bf16),
        oracle=adoption_oracle(world_root) if world_root else None,
        used_before=used_before(world_root) if world_root else None,
        clusters=partial(cluster_users, embeddings, k=k, n_recent=n_recent_for_clusters, seed=seed),
        seed=seed,
    )
