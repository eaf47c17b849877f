"""Next-activity evaluation (paper Table 2): targets, scores and the baselines beside the model."""

from __future__ import annotations

import polars as pl
from sklearn.metrics import accuracy_score, f1_score

from sessionbert_core.evaluation.baselines import MarkovChain, PopularityBaseline, transitions
from sessionbert_core.model.inputs import next_activity_inputs


def scores(truth: pl.Series, predicted: pl.Series) -> dict[str, float]:
    y_true, y_pred = truth.to_list(), predicted.to_list()
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def baseline_scores(train: pl.DataFrame, test: pl.DataFrame, ceiling: pl.DataFrame | None = None) -> dict:
    """Popularity and first-order Markov (fitted on train), and the ceiling where the world gives one.

    `ceiling` has session_id, ceiling_service and ceiling_activity: the best prediction given the true task.
    """
    fit_on = next_activity_inputs(train)
    pairs = transitions(train)
    targets = next_activity_inputs(test)
    result: dict = {"service": {}, "page": {}, "n_sessions": targets.height}
    if targets.height == 0:
        return result
    for head, column, following in (("service", "target_service", "following_service"),
                                    ("page", "target_page", "following")):
        popular = PopularityBaseline().fit(fit_on[column])
        markov = MarkovChain().fit(pairs["previous"], pairs[following])
        result[head]["popularity"] = scores(targets[column], popular.predict(targets["previous"]))
        result[head]["markov"] = scores(targets[column], markov.predict(targets["previous"]))
    if ceiling is not None:
        joined = targets.join(ceiling, on="session_id", how="inner")
        if joined.height == targets.height:
            result["service"]["ceiling"] = scores(joined["target_service"], joined["ceiling_service"])
            result["page"]["ceiling"] = scores(joined["target_page"], joined["ceiling_activity"])
    return result


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of seeds' figures; the spread of one value is 0."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def format_spread(values, digits: int = 3) -> str:
    """`mean ± sd` of several seeds' figures, the bare figure for one, `-` for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, spread = mean_and_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"
