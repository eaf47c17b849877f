"""Next-activity baselines: the most popular last activity, and a first-order Markov chain (the one
Markov model of the project: the next-activity baseline, the blend with SessionBERT, and the Markov
recommender all fit it on `transitions`)."""

from __future__ import annotations

import polars as pl

from sessionbert_core.activity import service_of_expr


def transitions(sessions: pl.DataFrame) -> pl.DataFrame:
    """Every (previous activity, next activity, next service) pair of the given sessions."""
    return (
        sessions.select(previous=pl.col("activities").list.slice(0, pl.col("activities").list.len() - 1),
                        following=pl.col("activities").list.slice(1))
        .explode("previous", "following")
        .drop_nulls()
        .with_columns(following_service=service_of_expr(pl.col("following")))
    )


class PopularityBaseline:
    """Predicts the most frequent target seen in training, whatever the prefix."""

    def fit(self, targets: pl.Series) -> PopularityBaseline:
        if targets.len() == 0:
            raise ValueError("cannot fit a popularity baseline on no targets")
        self.prediction_ = targets.value_counts(sort=True)[targets.name][0]
        return self

    def predict(self, previous: pl.Series) -> pl.Series:
        return pl.Series("prediction", [self.prediction_] * previous.len(), dtype=pl.String)


class MarkovChain:
    """First-order Markov chain as probabilities, backed off to popularity:
    P(x | previous) = (count(previous, x) + a * P(x)) / (count(previous) + a), with a = `smoothing`.

    `predict` gives the item seen most often after the previous one (ties: the first by name), the
    most frequent item for a previous one never seen; the probabilities let it be blended with the
    model's, and `top` ranks the k most probable next items (the Markov recommender).
    """

    def __init__(self, smoothing: float = 1.0):
        self.smoothing = smoothing

    def fit(self, previous: pl.Series, following: pl.Series) -> MarkovChain:
        pairs = pl.DataFrame({"previous": previous, "candidate": following}).drop_nulls()
        if pairs.height == 0:
            raise ValueError("cannot fit a Markov chain on no transitions")
        self.counts_ = pairs.group_by("previous", "candidate").agg(count=pl.len().cast(pl.Float64))
        self.totals_ = self.counts_.group_by("previous").agg(total=pl.col("count").sum())
        self.prior_ = (pairs.group_by("candidate").len().with_columns(prior=pl.col("len") / pairs.height)
                       .select("candidate", "prior"))
        return self

    def _most_frequent(self, k: int) -> pl.DataFrame:
        """`previous, candidate, count, total, p`: the k items seen most often after each previous item
        (ties: the first by name), with their observed shares `p`."""
        return (self.counts_.join(self.totals_, on="previous").with_columns(p=pl.col("count") / pl.col("total"))
                .sort(["previous", "count", "candidate"], descending=[False, True, False])
                .group_by("previous", maintain_order=True).head(k))

    def _most_popular(self, k: int) -> pl.DataFrame:
        """`candidate, prior`: the k most frequent next items overall (ties: the first by name)."""
        return self.prior_.sort(["prior", "candidate"], descending=[True, False]).head(k)

    def predict(self, previous: pl.Series) -> pl.Series:
        """The most frequent next item after each previous item (popularity where it was never seen)."""
        best = self._most_frequent(1).select("previous", prediction="candidate")
        frame = pl.DataFrame({"previous": previous}).join(best, on="previous", how="left", maintain_order="left")
        return frame["prediction"].fill_null(self._most_popular(1)["candidate"][0])

    def top(self, k: int) -> tuple[pl.DataFrame, tuple[list[str], list[float]]]:
        """`previous, candidates, probabilities`: the k items seen most often after each previous item with
        their observed shares; and, for a previous item never seen, the k most popular with theirs."""
        table = self._most_frequent(k).group_by("previous", maintain_order=True).agg(
            candidates=pl.col("candidate"), probabilities=pl.col("p"))
        popular = self._most_popular(k)
        return table, (popular["candidate"].to_list(), popular["prior"].to_list())

    def candidates(self, previous: pl.DataFrame, k: int) -> pl.DataFrame:
        """`row, candidate`: for each row of `previous` (`row, previous`), the k items seen most often after
        its previous item and the k most popular ones."""
        seen = self._most_frequent(k).select("previous", "candidate")
        popular = self._most_popular(k).select("candidate")
        return pl.concat([previous.join(seen, on="previous", how="inner").select("row", "candidate"),
                          previous.select("row").join(popular, how="cross")]).unique()

    def probability(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` (with `previous` and `candidate`) with the column `markov`: P(candidate | previous)."""
        a = self.smoothing
        joined = (frame.join(self.counts_, on=["previous", "candidate"], how="left", maintain_order="left")
                  .join(self.totals_, on="previous", how="left", maintain_order="left")
                  .join(self.prior_, on="candidate", how="left", maintain_order="left"))
        markov = ((pl.col("count").fill_null(0.0) + a * pl.col("prior").fill_null(0.0))
                  / (pl.col("total").fill_null(0.0) + a))
        return joined.with_columns(markov=markov).drop("count", "total", "prior")
