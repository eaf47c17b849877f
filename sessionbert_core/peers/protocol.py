"""What a next-activity peer is: fit on train (settings chosen on validation), then the protocol's top-k for both heads.

The protocol is SessionBERT's (`model.inputs.next_activity_inputs`): each session of two or more
activities, its last activity held out as the target, the rest its prefix. A peer sees only the
prefix's activities, never the session's context sections (location, billing, daily services);
those would be a later lever. The service head is the activity distribution summed by service, so
the two heads never disagree about what the peer believes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, Self

import numpy as np
import polars as pl
import torch

from sessionbert_core.activity import service_of
from sessionbert_core.model.inputs import next_activity_inputs

PAD, UNKNOWN = 0, 1  # ids every vocabulary reserves; PAD also marks "before the session began"
RESERVED = 2  # activity i of the vocabulary has id i + RESERVED
PREDICTION_CHUNK = 4096  # prefixes scored at a time: memory stays bounded by chunk x activities
IDENTITY = ("user_id", "session_id", "previous", "target_service", "target_page")


class NextActivityPeer(Protocol):
    """A published next-item model trained from scratch beside SessionBERT."""

    summary_: dict  # after fit: the settings used, what validation chose, seconds

    def fit(self, train: pl.DataFrame, validation: pl.DataFrame) -> Self:
        """Learn from `train`'s sessions; whatever is chosen (epochs, a setting) is chosen on `validation` only."""
        ...

    def predict(self, sessions: pl.DataFrame, k: int = 20) -> pl.DataFrame:
        """`predict_next_activity`'s frame for each session of two or more activities, its last one held out:
        `user_id, session_id, previous, target_service, target_page, services, service_probabilities, pages,
        page_probabilities, predicted_service, predicted_page` (top-k lists, probabilities summing to at most 1)."""
        ...


@dataclass(frozen=True)
class Vocabulary:
    """The train split's activities, most frequent first (ties by name), and the service of each."""

    activities: tuple[str, ...]

    @classmethod
    def of(cls, sessions: pl.DataFrame) -> Vocabulary:
        counts = sessions["activities"].explode().drop_nulls().value_counts(name="count")
        if counts.height == 0:
            raise ValueError("cannot build a vocabulary from sessions without activities")
        return cls(tuple(counts.sort(["count", "activities"], descending=[True, False])["activities"]))

    @property
    def size(self) -> int:
        return len(self.activities)

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {a: i + RESERVED for i, a in enumerate(self.activities)}

    def ids(self, activities: pl.Series) -> np.ndarray:
        """The id of each activity; an activity not seen in training is UNKNOWN."""
        return activities.replace_strict(self._ids, default=UNKNOWN, return_dtype=pl.Int64).to_numpy()

    def encode(self, lists: pl.Series) -> pl.Series:
        """Lists of activities as lists of ids; an activity not seen in training is UNKNOWN."""
        return lists.list.eval(pl.element().replace_strict(self._ids, default=UNKNOWN, return_dtype=pl.Int64))

    def service_matrix(self) -> tuple[list[str], np.ndarray]:
        """Services in order of first appearance, and the activities x services 0/1 matrix that sums by service."""
        of = [service_of(a) for a in self.activities]
        services = list(dict.fromkeys(of))
        column = {s: j for j, s in enumerate(services)}
        matrix = np.zeros((self.size, len(services)), np.float32)
        matrix[np.arange(self.size), [column[s] for s in of]] = 1.0
        return services, matrix


def protocol_inputs(sessions: pl.DataFrame) -> pl.DataFrame:
    """The protocol's rows (sessions of two or more activities): identity, `prefix` and targets."""
    return next_activity_inputs(sessions).select(*IDENTITY, "prefix")


def last_items(prefixes: pl.Series, n: int) -> np.ndarray:
    """The last `n` ids of each prefix as a (rows, n) array, PAD where the prefix is shorter (session start)."""
    padded = pl.select(pl.concat_list(pl.lit([PAD] * n, dtype=pl.List(pl.Int64)), prefixes).list.tail(n))
    return padded.to_series().list.to_array(n).to_numpy().astype(np.int64).reshape(-1, n)


def top_k(probabilities: np.ndarray, labels: np.ndarray, k: int) -> tuple[pl.Series, pl.Series]:
    """The k most probable labels of each row, with their probabilities, as list columns."""
    k = min(k, probabilities.shape[1])
    p, index = torch.from_numpy(probabilities).topk(k, dim=1)
    names = pl.Series(labels[index.numpy().ravel()]).reshape((len(index), k)).cast(pl.List(pl.String))
    return names, pl.Series(p.numpy().astype(np.float64).ravel()).reshape((len(p), k)).cast(pl.List(pl.Float64))


class DistributionPeer:
    """A peer that gives a probability over every training activity: prediction frames and validation accuracy
    follow from `distribution` (subclasses set `vocabulary_` in fit)."""

    vocabulary_: Vocabulary

    def distribution(self, prefixes: pl.Series) -> np.ndarray:
        """(rows, activities) probabilities of the next activity after each prefix of ids (rows sum to 1)."""
        raise NotImplementedError

    def predict(self, sessions: pl.DataFrame, k: int = 20) -> pl.DataFrame:
        inputs = protocol_inputs(sessions)
        services, by_service = self.vocabulary_.service_matrix()
        parts, page_labels, service_labels = [], np.array(self.vocabulary_.activities), np.array(services)
        for start in range(0, inputs.height, PREDICTION_CHUNK):
            chunk = inputs.slice(start, PREDICTION_CHUNK)
            p = self.distribution(self.vocabulary_.encode(chunk["prefix"]))
            (top_pages, page_p), (top_services, service_p) = (top_k(p, page_labels, k),
                                                              top_k(p @ by_service, service_labels, k))
            parts.append(pl.DataFrame({"services": top_services, "service_probabilities": service_p,
                                       "pages": top_pages, "page_probabilities": page_p}))
        top = pl.concat(parts) if parts else pl.DataFrame(schema={
            "services": pl.List(pl.String), "service_probabilities": pl.List(pl.Float64),
            "pages": pl.List(pl.String), "page_probabilities": pl.List(pl.Float64)})
        return pl.concat([inputs.select(IDENTITY), top], how="horizontal").with_columns(
            predicted_service=pl.col("services").list.first(), predicted_page=pl.col("pages").list.first())

    def accuracy(self, inputs: pl.DataFrame) -> float:
        """Share of `protocol_inputs` rows whose target page is the most probable activity (0 for none)."""
        if inputs.height == 0:
            return 0.0
        best = np.concatenate([self.distribution(self.vocabulary_.encode(inputs["prefix"][s:s + PREDICTION_CHUNK]))
                               .argmax(1) for s in range(0, inputs.height, PREDICTION_CHUNK)])
        return float((np.array(self.vocabulary_.activities)[best] == inputs["target_page"].to_numpy()).mean())
