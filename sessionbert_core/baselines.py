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
