"""Personas (paper 4.3): clusters mapped to predefined personas through their tasks, and users tagged.

The definitions (YAML, docs/design.md#persona-definitions) give personas as sets of tasks and tasks as sets
of activities (`service;page`, or `service;*`). A cluster's activities give its task probabilities; each persona
is the one-hot vector of its tasks; P(persona | cluster) compares the two:

    P(t | c)      = sum over the cluster's top-N activities a of n(a, c) * [a in t] / |tasks(a)|,
                    divided by the count of those activities that belong to any task
    s(p, c)       = cos(one_hot(p), P(. | c)) = sum_{t in p} P(t | c) / (sqrt(|p|) * ||P(. | c)||)
    P(p | c)      = s(p, c) / sum_p' s(p', c)

The paper's own formula did not survive its text; its description (one-hot personas, clusters as
task probabilities) fixes the vectors, and cosine is the comparison we use because a plain dot
product (the share of the cluster's activity covered by the persona's tasks) always favours the
persona with more tasks: one whose tasks include another's can never lose to it. Personas whose
P(p | c) is within MERGE_MARGIN (relative) of the best are merged into one tag, as the paper did
for its Personas 2 and 4; personas no cluster carries are reported as "not enough signal".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from sessionbert_core.activity import service_of
from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.segment import CosineKMeans, cluster_activity_counts

TOP_ACTIVITIES = 200
MERGE_MARGIN = 0.05  # a persona within 5% of the best P(persona | cluster) shares the cluster's tag
TAG_SEPARATOR = " + "


@dataclass(frozen=True)
class PersonaDefinitions:
    personas: dict[str, tuple[str, ...]]  # persona -> its tasks
    tasks: dict[str, tuple[str, ...]]  # task -> its activities (`service;page` or `service;*`)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def tasks_of_activity(self, activity: str) -> list[str]:
        service = service_of(activity)
        return [task for task, patterns in self.tasks.items()
                if activity in patterns or f"{service};*" in patterns]

    def services_of_persona(self, persona: str) -> set[str]:
        """Every service named by the activities of the persona's tasks (each persona of a merged tag)."""
        return {service_of(pattern) for name in persona.split(TAG_SEPARATOR)
                for task in self.personas.get(name, ()) for pattern in self.tasks[task]}


def load_definitions(path: Path | str) -> PersonaDefinitions:
    """Read and validate a persona definitions YAML; the error names the file and what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"persona definitions {path}: cannot read ({error})") from error
    sections = ("personas", "tasks")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(key), dict) and raw[key] for key in sections):
        raise ValueError(f"persona definitions {path}: need a non-empty `personas:` and a non-empty `tasks:` mapping")
    tasks = {}
    for name, body in raw["tasks"].items():
        activities = (body or {}).get("activities") if isinstance(body, dict) else None
        if not isinstance(activities, list) or not all(isinstance(a, str) and ";" in a for a in activities):
            raise ValueError(f"persona definitions {path}: task {name!r} needs `activities:`, a list of "
                             "'service;page' or 'service;*'")
        tasks[str(name)] = tuple(activities)
    personas = {}
    for name, body in raw["personas"].items():
        listed = (body or {}).get("tasks") if isinstance(body, dict) else None
        if not isinstance(listed, list) or not listed:
            raise ValueError(f"persona definitions {path}: persona {name!r} needs `tasks:`, a non-empty list")
        unknown = [t for t in listed if t not in tasks]
        if unknown:
            raise ValueError(f"persona definitions {path}: persona {name!r} names undefined tasks {unknown}")
        personas[str(name)] = tuple(listed)
    return PersonaDefinitions(personas=personas, tasks=tasks)


def cluster_task_probabilities(activity_counts: pl.DataFrame, definitions: PersonaDefinitions,
                               top_n: int = TOP_ACTIVITIES) -> pl.DataFrame:
    """P(task | cluster) from each cluster's top-N activities (`activity_counts`: cluster, activity, count).

    An activity of several tasks counts a share for each; activities of no task are left out.
    Returns `cluster` plus one column per task (a cluster without any mapped activity gets zeros).
    """
    task_names = definitions.task_names
    top = (activity_counts.sort(["cluster", "count", "activity"], descending=[False, True, False])
           .group_by("cluster", maintain_order=True).head(top_n))
    rows = []
    for cluster, group in top.group_by("cluster", maintain_order=True):
        mass = dict.fromkeys(task_names, 0.0)
        for activity, count in group.select("activity", "count").iter_rows():
            owners = definitions.tasks_of_activity(activity)
            for task in owners:
                mass[task] += count / len(owners)
        total = sum(mass.values())
        rows.append({"cluster": cluster[0], **{t: (m / total if total else 0.0) for t, m in mass.items()}})
    schema = {"cluster": pl.Int64, **dict.fromkeys(task_names, pl.Float64)}
    return pl.DataFrame(rows, schema=schema).sort("cluster")


def persona_probabilities(task_probabilities: pl.DataFrame, definitions: PersonaDefinitions) -> pl.DataFrame:
    """P(persona | cluster) by the module's formula: `cluster` plus one column per persona."""
    task_names = definitions.task_names
    clusters = task_probabilities.select(task_names).to_numpy()
    one_hot = np.array([[task in tasks for task in task_names] for tasks in definitions.personas.values()],
                       dtype=np.float64)
    norms = np.linalg.norm(clusters, axis=1, keepdims=True) * np.sqrt(one_hot.sum(axis=1))[None, :]
    cosine = np.divide(clusters @ one_hot.T, norms, out=np.zeros((len(clusters), len(one_hot))), where=norms > 0)
    totals = cosine.sum(axis=1, keepdims=True)
    probabilities = np.divide(cosine, totals, out=np.zeros_like(cosine), where=totals > 0)
    return pl.DataFrame({"cluster": task_probabilities["cluster"],
                         **{p: probabilities[:, i] for i, p in enumerate(definitions.personas)}})


def tag_clusters(probabilities: pl.DataFrame, margin: float = MERGE_MARGIN) -> tuple[pl.DataFrame, list[str]]:
    """Each cluster's persona tag and its probability; and the personas no cluster carries.

    The tag is the most probable persona, merged (`Persona 2 + Persona 4`) with every persona within
    `margin` of it (relative); its probability is the sum of the merged personas'. A cluster whose
    activities map to no task gets an empty tag.
    """
    personas = [c for c in probabilities.columns if c != "cluster"]
    rows, carried = [], set()
    for row in probabilities.iter_rows(named=True):
        best = max(row[p] for p in personas)
        members = [p for p in personas if best > 0 and row[p] >= best * (1.0 - margin)]
        carried.update(members)
        rows.append({"cluster": row["cluster"], "persona": TAG_SEPARATOR.join(members),
                     "probability": float(sum(row[p] for p in members))})
    tags = pl.DataFrame(rows, schema={"cluster": pl.Int64, "persona": pl.String, "probability": pl.Float64})
    return tags, [p for p in personas if p not in carried]


def tag_matches(tag: str | None, persona: str) -> bool:
    """A merged tag counts as a match when it contains the persona."""
    return bool(tag) and persona in tag.split(TAG_SEPARATOR)


def persona_evaluation(assigned: pl.DataFrame, truth: pl.DataFrame) -> dict:
    """ARI and NMI of clusters against true personas, persona accuracy overall and per persona.

    `assigned`: user_id, cluster, persona (tag); `truth`: user_id, persona. Sensitivity of a persona
    is the share of its users whose tag contains it (paper Table 7).
    """
    joined = assigned.join(truth.select("user_id", true_persona="persona"), on="user_id", how="inner")
    if joined.height == 0:
        raise ValueError("no assigned user has a true persona")
    hits = [tag_matches(tag, true) for tag, true in joined.select("persona", "true_persona").iter_rows()]
    joined = joined.with_columns(hit=pl.Series(hits, dtype=pl.Boolean))
    per_persona = (joined.group_by("true_persona").agg(sensitivity=pl.col("hit").mean(), n_users=pl.len())
                   .sort("true_persona"))
    return {
        "ari": float(adjusted_rand_score(joined["true_persona"], joined["cluster"])),
        "nmi": float(normalized_mutual_info_score(joined["true_persona"], joined["cluster"])),
        "accuracy": float(joined["hit"].mean()),
        "n_users_with_truth": joined.height,
        "per_persona": {p: {"sensitivity": float(s), "n_users": int(n)} for p, s, n in per_persona.iter_rows()},
    }



def nearest_clusters(embeddings: pl.DataFrame, centroids: np.ndarray, n_recent: int) -> pl.DataFrame:
    """`user_id, cluster`: each user (the mean of their last `n_recent` session embeddings) at its
    nearest centroid by cosine."""
    users, vectors = user_vectors(embeddings, n_recent)
    clusters = CosineKMeans.from_centers(centroids).predict(vectors)
    return pl.DataFrame({"user_id": pl.Series(users, dtype=pl.String), "cluster": pl.Series(clusters, dtype=pl.Int64)})


def assign_personas(embeddings: pl.DataFrame, centroids: np.ndarray, tags: pl.DataFrame,
                    n_recent: int) -> pl.DataFrame:
    """`user_id, cluster, persona, probability`: each user's nearest centroid and that cluster's tag.

    A user is the mean of their last `n_recent` session embeddings (`embed.user_vectors`), so a
    user the model never saw gets a persona from their sessions alone, as the paper assigns new
    users. `tags` is `tag_clusters`' output; with no definitions the persona is empty.
    """
    return tag_users(nearest_clusters(embeddings, centroids, n_recent), tags)


def tag_users(of_user: pl.DataFrame, tags: pl.DataFrame) -> pl.DataFrame:
    """`user_id, cluster, persona, probability`: each user's cluster (`of_user`) with that cluster's tag."""
    return (
        of_user.join(tags, on="cluster", how="left", maintain_order="left")
        .with_columns(pl.col("persona").fill_null(""), pl.col("probability").fill_null(0.0))
        .select("user_id", "cluster", "persona", "probability")
    )


@dataclass(frozen=True)
class ClusterMapping:
    tasks: pl.DataFrame  # P(task | cluster)
    probabilities: pl.DataFrame  # P(persona | cluster)
    tags: pl.DataFrame  # cluster, persona, probability
    not_enough_signal: list[str]


def map_clusters(sessions: pl.DataFrame, cluster_of_user: pl.DataFrame,
                 definitions: PersonaDefinitions) -> ClusterMapping:
    """The whole of paper 4.3 for clustered users: task probabilities, persona probabilities, tags."""
    return map_counts(cluster_activity_counts(sessions, cluster_of_user), definitions)


def map_counts(activity_counts: pl.DataFrame, definitions: PersonaDefinitions) -> ClusterMapping:
    """Paper 4.3 from each cluster's activity counts (`cluster, activity, count`), however they were counted."""
    tasks = cluster_task_probabilities(activity_counts, definitions)
    probabilities = persona_probabilities(tasks, definitions)
    tags, unsupported = tag_clusters(probabilities)
    return ClusterMapping(tasks, probabilities, tags, unsupported)
