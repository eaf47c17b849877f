"""Next-activity baselines: the most popular last activity, and a first-order Markov chain."""

from __future__ import annotations

import polars as pl


class PopularityBaseline:
    """Predicts the most frequent target seen in training, whatever the prefix."""

    def fit(self, targets: pl.Series) -> PopularityBaseline:
        if targets.len() == 0:
            raise ValueError("cannot fit a popularity baseline on no targets")
        self.prediction_ = targets.value_counts(sort=True)[targets.name][0]
        return self

    def predict(self, previous: pl.Series) -> pl.Series:
        return pl.Series("prediction", [self.prediction_] * previous.len(), dtype=pl.String)


class MarkovBaseline:
    """First-order Markov chain: the most frequent next item after the previous item.

    Fitted on every transition of the training sessions (not only the last one); an unseen previous
    item falls back to the most popular target.
    """

    def fit(self, previous: pl.Series, following: pl.Series) -> MarkovBaseline:
        pairs = pl.DataFrame({"previous": previous, "following": following}).drop_nulls()
        if pairs.height == 0:
            raise ValueError("cannot fit a Markov baseline on no transitions")
        self.table_ = (
            pairs.group_by("previous", "following")
            .len()
            .sort(["previous", "len", "following"], descending=[False, True, False])
            .group_by("previous", maintain_order=True)
            .first()
            .select("previous", prediction="following")
        )
        self.fallback_ = pairs["following"].value_counts(sort=True)["following"][0]
        return self

    def predict(self, previous: pl.Series) -> pl.Series:
        frame = pl.DataFrame({"previous": previous}).join(self.table_, on="previous", how="left",
                                                          maintain_order="left")
        return frame["prediction"].fill_null(self.fallback_)


class MarkovChain:
    """First-order Markov chain as probabilities, backed off to popularity:
    P(x | previous) = (count(previous, x) + a * P(x)) / (count(previous) + a), with a = `smoothing`.

    Its most probable next item is MarkovBaseline's (popularity for a previous item never seen);
    the probabilities let it be blended with the model's.
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

    def candidates(self, previous: pl.DataFrame, k: int) -> pl.DataFrame:
        """`row, candidate`: for each row of `previous` (`row, previous`), the k items seen most often after
        its previous item and the k most popular ones."""
        seen = (self.counts_.sort("count", "candidate", descending=[True, False])
                .group_by("previous", maintain_order=True).head(k))
        popular = self.prior_.sort("prior", "candidate", descending=[True, False]).head(k).select("candidate")
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
