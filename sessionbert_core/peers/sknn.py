"""V-SKNN: the next activity scored by the most similar recent train sessions, the prefix's latest activities first.

Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", User Modeling and
User-Adapted Interaction 28, 2018 (V-SKNN; reference code `VMContextKNN` in session-rec). The
prefix is a vector whose i-th of n activities weighs i / n (linear decay: the latest weighs 1, a
repeated activity its latest weight); a train session is its set of activities. Among the train
sessions sharing an activity with the prefix, the `sample_size` most recent (by start) are
candidates; the `k` most similar by cosine are the neighbours; an activity's score is the sum of
the similarities of the neighbours that hold it, normalized here to a distribution (popularity
where no train session shares an activity, e.g. a prefix of unseen activities). Scores of the
prefix's own activities ("reminders") are kept or dropped: the one choice made on validation
(session-rec keeps them by default; console sessions revisit pages, a pure chain never does).

Settings: k = 100 neighbours from a sample of the 500 most recent sessions (the defaults session-rec's
V-SKNN documents); no score decay by the neighbour's match position (a later session-rec extension).
Matrices are scipy.sparse, prefixes scored a chunk at a time. Only the activities are read, never
the session's context sections; train sessions of other users may be later than a test session
(the splits are by user, as SessionBERT's training is).
"""

from __future__ import annotations

import time
from typing import Self

import numpy as np
import polars as pl
from scipy import sparse

from sessionbert_core.peers.protocol import RESERVED, DistributionPeer, Vocabulary, protocol_inputs

PREFIX_CHUNK = 512  # prefixes scored at a time: memory is chunk x distinct prefix activities x sample_size


class VSKNN(DistributionPeer):
    """Vector-multiplication session kNN with linear position decay and cosine similarity."""

    def __init__(self, k: int = 100, sample_size: int = 500):
        if not 0 < k <= sample_size:
            raise ValueError(f"need 0 < k <= sample_size, not k={k}, sample_size={sample_size}")
        self.k, self.sample_size = k, sample_size

    def fit(self, train: pl.DataFrame, validation: pl.DataFrame) -> Self:
        started = time.perf_counter()
        self.vocabulary_ = Vocabulary.of(train)
        recent_first = train.filter(pl.col("n_activities") >= 1).sort("start", descending=True)
        self.sessions_ = sessions = _incidence(self.vocabulary_.encode(recent_first["activities"]),
                                               self.vocabulary_.size, lambda lengths, positions: 1.0)  # sets
        self.session_norms_ = np.sqrt(np.asarray(sessions.sum(1)).ravel()).astype(np.float32)  # cosine's
        self.recent_holders_ = _first_per_row(sessions.T.tocsr(), self.sample_size, sessions.shape[0])
        self.popularity_ = (np.asarray(sessions.sum(0)).ravel() / sessions.sum()).astype(np.float32)
        accuracy = self._accuracy_by_remind(protocol_inputs(validation))
        self.remind_ = max(accuracy, key=accuracy.get)  # a tie keeps the reminders (session-rec's default)
        self.summary_ = {"method": "v_sknn", "k": self.k, "sample_size": self.sample_size, "remind": self.remind_,
                         "validation_accuracy": round(accuracy[self.remind_], 5),
                         "validation_accuracy_by_remind": {str(r): round(a, 5) for r, a in accuracy.items()},
                         "train_sessions": sessions.shape[0], "seconds": round(time.perf_counter() - started, 2)}
        return self

    def distribution(self, prefixes: pl.Series) -> np.ndarray:
        parts = [self._normalized(*self._neighbour_scores(prefixes.slice(s, PREFIX_CHUNK)), self.remind_)
                 for s in range(0, prefixes.len(), PREFIX_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, self.vocabulary_.size), np.float32)

    def _accuracy_by_remind(self, inputs: pl.DataFrame) -> dict[bool, float]:
        """Validation accuracy with and without the prefix's own activities, from one pass of neighbour scores."""
        hits = {True: 0, False: 0}
        for start in range(0, inputs.height, PREFIX_CHUNK):
            chunk = inputs.slice(start, PREFIX_CHUNK)
            scores, in_prefix = self._neighbour_scores(self.vocabulary_.encode(chunk["prefix"]))
            targets = self.vocabulary_.ids(chunk["target_page"]) - RESERVED
            for remind in hits:
                hits[remind] += int((self._normalized(scores.copy(), in_prefix, remind).argmax(1) == targets).sum())
        return {remind: hit / max(inputs.height, 1) for remind, hit in hits.items()}

    def _neighbour_scores(self, prefixes: pl.Series) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Each activity's summed similarity over each prefix's k nearest sessions, and the prefixes' own cells."""
        query = _incidence(prefixes, self.vocabulary_.size, lambda lengths, positions: (positions + 1) / lengths)
        items, weights = _padded_rows(query)  # each prefix's distinct activities and their latest weights
        n_prefixes, n_sessions = len(items), self.sessions_.shape[0]
        # The sample_size most recent sessions holding any of a prefix's activities are among the sample_size most
        # recent holders of each, and a candidate holds an activity exactly when it is among those: the
        # dot products are sums of the prefix's weights over its activities' recent holders.
        holders = self.recent_holders_[items]  # (prefixes, activities, sample_size), n_sessions past the end
        held = holders < n_sessions
        pair = np.arange(n_prefixes)[:, None, None] * n_sessions + holders
        pairs, which = np.unique(pair[held], return_inverse=True)  # sorted: by prefix, then most recent first
        dot = np.bincount(which, weights=np.broadcast_to(weights[:, :, None], holders.shape)[held])
        row, session = pairs // n_sessions, pairs % n_sessions
        rank = np.arange(len(pairs)) - np.searchsorted(row, np.arange(n_prefixes))[row]
        sampled = rank < self.sample_size
        row, session, rank = row[sampled], session[sampled], rank[sampled]
        norms = np.sqrt((weights ** 2).sum(1))
        similarity = np.zeros((n_prefixes, self.sample_size), np.float32)
        candidates = np.zeros((n_prefixes, self.sample_size), np.int64)
        similarity[row, rank] = dot[sampled] / (norms[row] * self.session_norms_[session])
        candidates[row, rank] = session
        k = min(self.k, self.sample_size)
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weight, sessions = np.take_along_axis(similarity, nearest, 1), np.take_along_axis(candidates, nearest, 1)
        rows = np.broadcast_to(np.arange(n_prefixes)[:, None], sessions.shape)
        neighbours = sparse.csr_matrix((weight.ravel(), (rows.ravel(), sessions.ravel())),
                                       shape=(n_prefixes, n_sessions))  # empty slots weigh 0
        return (neighbours @ self.sessions_).toarray(), query.nonzero()

    def _normalized(self, scores: np.ndarray, in_prefix: tuple[np.ndarray, np.ndarray], remind: bool) -> np.ndarray:
        if not remind:
            scores[in_prefix] = 0.0
        totals = scores.sum(1, keepdims=True)
        return np.where(totals > 0, scores / np.maximum(totals, 1e-12), self.popularity_).astype(np.float32)


def _incidence(ids: pl.Series, size: int, weight) -> sparse.csr_matrix:
    """Rows x activities matrix of `weight(lengths, positions)` for each list of ids (positions from 0); an activity
    repeated in a list keeps its latest weight; unknown activities are left out."""
    lengths = ids.list.len().to_numpy()
    flat = ids.explode().to_numpy()
    rows = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values = np.broadcast_to(np.asarray(weight(lengths[rows], positions), np.float32), flat.shape)
    known = flat >= RESERVED
    cells = rows[known] * size + flat[known] - RESERVED
    cells, latest = np.unique(cells[::-1], return_index=True)  # reversed: the first found is the latest
    return sparse.csr_matrix((values[known][::-1][latest], (cells // size, cells % size)), shape=(len(lengths), size))


def _first_per_row(matrix: sparse.csr_matrix, n: int, fill: int) -> np.ndarray:
    """(rows + 1, n): the n smallest column indices of each row's nonzeros, `fill` after them and in a last row."""
    matrix.sort_indices()
    first = np.full((matrix.shape[0] + 1, n), fill, np.int64)
    counts = np.minimum(np.diff(matrix.indptr), n)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    slots = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    first[rows, slots] = matrix.indices[matrix.indptr[rows] + slots]
    return first


def _padded_rows(matrix: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nonzero columns and values, padded to the longest row with the extra column and weight 0."""
    counts = np.diff(matrix.indptr)
    width = max(int(counts.max(initial=0)), 1)
    columns = np.full((matrix.shape[0], width), matrix.shape[1], np.int64)
    values = np.zeros((matrix.shape[0], width), np.float32)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    slots = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    columns[rows, slots], values[rows, slots] = matrix.indices, matrix.data
    return columns, values
