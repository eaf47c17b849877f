"""Higher-order Markov chain with back-off: the next activity after the last three, backed off to two, one, popularity.

Interpolated back-off with a Dirichlet prior on each order (MacKay & Peto, "A hierarchical Dirichlet
language model", Natural Language Engineering 1995; the family Chen & Goodman compare in "An
empirical study of smoothing techniques for language modeling", 1999):

    P_n(x | h_n) = (count(h_n, x) + a * P_{n-1}(x | h_{n-1})) / (count(h_n) + a),   P_0 = popularity,

where h_n is the last n activities of the prefix. A history never seen in training backs off exactly
to the shorter one; a history seen often is its own observed shares. Histories that reach before the
session's first activity hold a start marker, so the chain also learns how sessions begin. With
order 1 and a = 1 it is the project's first-order chain (`evaluation.baselines.MarkovChain`).

Settings: order 3, a = 1 (the project's first-order smoothing). Nothing is chosen on validation; its
accuracy is reported. The chain sees only the activities, never the session's context sections.
"""

from __future__ import annotations

import time
from typing import Self

import numpy as np
import polars as pl
from scipy import sparse

from sessionbert_core.model.inputs import next_activity_inputs
from sessionbert_core.peers.protocol import RESERVED, DistributionPeer, Vocabulary, last_items, protocol_inputs


class HigherOrderMarkov(DistributionPeer):
    """P(next activity | the last `order` activities), interpolated down to popularity with strength `smoothing`."""

    def __init__(self, order: int = 3, smoothing: float = 1.0):
        if order < 1 or smoothing <= 0:
            raise ValueError(f"order must be at least 1 and smoothing positive, not {order} and {smoothing}")
        self.order, self.smoothing = order, smoothing

    def fit(self, train: pl.DataFrame, validation: pl.DataFrame) -> Self:
        started = time.perf_counter()
        self.vocabulary_ = Vocabulary.of(train)
        cuts = next_activity_inputs(train, every_cut=True)  # every (prefix, next activity) pair of the train split
        if cuts.height == 0:
            raise ValueError("cannot fit a Markov chain on sessions without two activities")
        histories = last_items(self.vocabulary_.encode(cuts["prefix"]), self.order)
        following = self.vocabulary_.ids(cuts["target_page"]) - RESERVED
        size = self.vocabulary_.size
        self.popularity_ = np.bincount(following, minlength=size).astype(np.float32) / len(following)
        self.counts_ = []  # per order n: the histories seen (sorted keys) and their next-activity counts
        for n in range(1, self.order + 1):
            seen, row = np.unique(self._keys(histories[:, -n:]), return_inverse=True)
            counts = sparse.csr_matrix((np.ones(len(row), np.float32), (row, following)), shape=(len(seen), size))
            self.counts_.append((seen, counts))
        self.summary_ = {"method": "markov", "order": self.order, "smoothing": self.smoothing,
                         "histories": [len(seen) for seen, _ in self.counts_],
                         "seconds": round(time.perf_counter() - started, 2)}
        self.summary_["validation_accuracy"] = round(self.accuracy(protocol_inputs(validation)), 5)
        return self

    def _keys(self, histories: np.ndarray) -> np.ndarray:
        """One integer per history of ids (its digits in base vocabulary size + RESERVED)."""
        base = self.vocabulary_.size + RESERVED
        return histories @ (base ** np.arange(histories.shape[1], dtype=np.int64))

    def distribution(self, prefixes: pl.Series) -> np.ndarray:
        histories = last_items(prefixes, self.order)
        p = np.tile(self.popularity_, (len(histories), 1))
        for n, (seen, counts) in enumerate(self.counts_, start=1):
            keys = self._keys(histories[:, -n:])
            where = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
            found = seen[where] == keys
            observed = np.zeros_like(p)
            observed[found] = counts[where[found]].toarray()
            p = (observed + self.smoothing * p) / (observed.sum(1, keepdims=True) + self.smoothing)
        return p
