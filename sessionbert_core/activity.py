"""An activity is `service;page`: the one place that splits it."""

from __future__ import annotations

import polars as pl


def service_of(activity: str) -> str:
    """The service of an activity `service;page` (page names may hold `;`, services never do)."""
    return activity.split(";", 1)[0]


def service_of_expr(activities: pl.Expr) -> pl.Expr:
    """`service_of` on a column of activities."""
    return activities.str.split(";").list.first()
