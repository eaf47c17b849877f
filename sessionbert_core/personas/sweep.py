"""The cluster sweep (paper Figure 2): what a user is, the silhouette curve of each space, the chosen k,
and the general-language encoder's curve beside SessionBERT's on the same users."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.representation import PersonaSpace, choose_representation, representation_summary
from sessionbert_core.personas.segment import K_RANGE, K_TOLERANCE, silhouette_sweep

# users -> (users, vectors) of the general-language encoder over their recent sessions
GeneralLanguage = Callable[[list[str], int], tuple[list[str], np.ndarray]]


@dataclass(frozen=True)
class Sweep:
    result: dict  # what `cluster_sweep.json` holds
    space: PersonaSpace  # the served space, for the clusters, users and the served model
    curves: dict[str, dict[int, float]]  # silhouette by k of each curve drawn


def sweep_users(embeddings: pl.DataFrame, sessions: pl.DataFrame, user_vector_sessions: int, sample_users: int,
                baseline_users: int, general_language: GeneralLanguage, seed: int = 0, k: int = 0,
                representation: str = "auto") -> Sweep:
    """Choose the space (`representation.choose_representation`, or the one named), take its k (or `k`),
    and draw every curve; fewer than 3 users make one cluster and no sweep. A k that needs more users
    than there are is a ValueError."""
    users, vectors = user_vectors(embeddings, user_vector_sessions)
    if len(users) < 3:
        return Sweep({"k": 1, "k_rule": "fewer than 3 users", "user_vector_sessions": user_vector_sessions,
                      "n_users": len(users), "sample_users": len(users), "baseline_users": 0,
                      "representation": "sessionbert", "silhouette": {"sessionbert": {}, "sessionbert_same_users": {},
                                                                       "general_language": {}}},
                     PersonaSpace("sessionbert"), {})
    picked, candidates = choose_representation(embeddings, sessions, user_vector_sessions, sample_users, seed, k=k)
    served = picked if representation == "auto" else representation
    chosen_k = candidates[served].k
    if chosen_k >= len(users):
        raise ValueError(f"k = {chosen_k} needs more than {len(users)} users")
    rows = sorted(np.random.default_rng(seed).choice(len(users), size=min(baseline_users, len(users)),
                                                     replace=False).tolist())
    _, baseline = general_language([users[i] for i in rows], user_vector_sessions)
    curves = {"sessionbert": candidates["sessionbert"].silhouette,
              "sessionbert_same_users": silhouette_sweep(vectors[rows], K_RANGE, len(rows), seed),
              "general_language": silhouette_sweep(baseline, K_RANGE, len(rows), seed),
              **{name: c.silhouette for name, c in candidates.items() if name != "sessionbert"}}
    result = {"k": chosen_k, "k_rule": f"smallest k within {K_TOLERANCE} of the best {served} silhouette"
                                       if not k else "set in the run config",
              "representation": served, "representation_reason": "chosen without ground truth"
              if representation == "auto" else "set in the run config",
              "representations": representation_summary(picked, candidates),
              "user_vector_sessions": user_vector_sessions, "n_users": len(users),
              "sample_users": min(sample_users, len(users)), "baseline_users": len(rows),
              "silhouette": {name: {str(kk): v for kk, v in c.items()} for name, c in curves.items()}}
    return Sweep(result, candidates[served].space, curves)
