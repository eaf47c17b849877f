"""The world's ground truth, which the pipeline never reads: personas, tasks, first uses, adoption odds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sessionbert_core.world.catalog import (
    TASKS,
)
from sessionbert_core.world.structure import WORLD_START

# ----------------------------------------------------------------------------------------------
# where a world's landing folder, truth, persona definitions and catalog lie


@dataclass(frozen=True)
class WorldPaths:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def personas_yaml(self) -> Path:
        return self.root / "personas.yaml"

    @property
    def catalog_json(self) -> Path:
        return self.root / "service_catalog.json"

    @property
    def manifest(self) -> Path:
        return self.root / "world.json"


# ----------------------------------------------------------------------------------------------
# reading the ground truth back


def load_truth(root: Path, name: str) -> pl.DataFrame:
    """One ground-truth table: users, sessions, user_tasks or first_use."""
    path = WorldPaths(Path(root)).truth / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no ground truth table {name!r} at {path}")
    return pl.read_parquet(path)


def adoption_probabilities(root: Path, cutoff_day: int | pl.DataFrame, horizon_days: int | None = None) -> pl.DataFrame:
    """Each user's true probability of first using each service in the days after a cutoff.

    `cutoff_day` is one world day (calendar, from the world's start) for everyone, with
    `horizon_days`, or a frame `user_id, cutoff_day, horizon_days` with a cutoff per user. (The
    Hit@k protocol's `seen_days` count a user's active days; this is the day after the last seen.)
    A service is adopted when a task containing it is taken up; a task still to be taken up after
    the cutoff is taken up within the horizon with 1 - (1 - hazard) ** horizon. Tasks already taken
    up whose services are still unused will be used with certainty.
    """
    tasks = load_truth(root, "user_tasks")
    first_use = load_truth(root, "first_use")
    if isinstance(cutoff_day, int):
        cutoffs = tasks.select("user_id").unique().with_columns(cutoff_day=pl.lit(cutoff_day),
                                                                 horizon_days=pl.lit(horizon_days))
    else:
        cutoffs = cutoff_day.select("user_id", "cutoff_day", "horizon_days")
    cutoffs = cutoffs.cast({"cutoff_day": pl.Int32, "horizon_days": pl.Int32})
    used = (first_use.join(cutoffs, on="user_id")
            .filter(pl.col("first_use_day") < pl.col("cutoff_day")).select("user_id", "service"))
    p_task = (
        tasks.join(cutoffs, on="user_id")
        .with_columns(
            p=pl.when(pl.col("enabled_day").is_not_null() & (pl.col("enabled_day") < pl.col("cutoff_day")))
            .then(1.0)
            .otherwise(1.0 - (1.0 - pl.col("daily_hazard")) ** pl.col("horizon_days")),
            service=pl.col("task").replace_strict({t: list(s) for t, s in TASKS.items()},
                                                   return_dtype=pl.List(pl.String)),
        )
        .explode("service")
    )
    return (
        p_task.group_by("user_id", "service")
        .agg(probability=1.0 - (1.0 - pl.col("p")).product())
        .join(used, on=["user_id", "service"], how="anti")
        .sort("user_id", pl.col("probability"), descending=[False, True])
    )


def world_day(date: pl.Expr) -> pl.Expr:
    """The world's day number (0 = its first day) of a date expression."""
    return (date - pl.lit(WORLD_START.date())).dt.total_days().cast(pl.Int32)


def adoption_oracle(root: Path):
    """For the Hit@k protocol: per-user cutoffs (`user_id, last_seen_day`) -> true adoption probabilities.

    The horizon runs from the day after the user's last seen day to the end of the world's window.
    """
    n_days = json.loads(WorldPaths(Path(root)).manifest.read_text())["config"]["size"]["n_days"]

    def probabilities(cutoffs: pl.DataFrame) -> pl.DataFrame:
        frame = cutoffs.select("user_id", cutoff_day=world_day(pl.col("last_seen_day")) + 1).with_columns(
            horizon_days=pl.lit(n_days) - pl.col("cutoff_day"))
        return adoption_probabilities(root, frame)

    return probabilities


def used_before(root: Path) -> pl.DataFrame:
    """`user_id, service`: what each user had used before the world's window began."""
    return load_truth(root, "first_use").filter(pl.col("first_use_day") < 0).select("user_id", "service")
