"""Figures of the paper, drawn with matplotlib (headless): silhouette curves, persona heat map, Hit@k bars."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl


def curves(lines: dict[str, dict[int, float]], chosen_k: int | None = None, xlabel: str = "k (clusters)",
           ylabel: str = "silhouette (cosine)", spread: dict[str, dict[int, float]] | None = None):
    """One line per name over integer x: the paper's Figure 2 (silhouette against k) by default.

    `spread` (same keys as `lines`): a standard deviation per point, drawn as error bars.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in lines.items():
        ks = sorted(int(k) for k in curve)
        errors = None
        if spread and name in spread:
            errors = [spread[name][k] if k in spread[name] else spread[name][str(k)] for k in ks]
        ax.errorbar(ks, [curve[k] if k in curve else curve[str(k)] for k in ks], yerr=errors, marker="o", label=name)
    if chosen_k is not None:
        ax.axvline(chosen_k, color="grey", linestyle="--", linewidth=1, label=f"chosen k = {chosen_k}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heat_map(matrix: pl.DataFrame, row: str, title: str):
    """Rows of `matrix` (named by column `row`) against its other columns, values annotated."""
    columns = [c for c in matrix.columns if c != row]
    values = matrix.select(columns).to_numpy().astype(float)
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2, 0.5 * len(values) + 1.6))
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(values)), [f"{row} {v}" for v in matrix[row].to_list()], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value < values.max() * 0.6 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def grouped_bars(table: pl.DataFrame, group: str, series: list[str], title: str, ylabel: str = ""):
    """One group of bars per row of `table` (named by column `group`), one bar per column in `series`."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(series), 1)
    x = np.arange(table.height)
    for i, name in enumerate(series):
        ax.bar(x + i * width, table[name].fill_null(0.0).to_numpy(), width, label=name)
    ax.set_xticks(x + width * (len(series) - 1) / 2, table[group].to_list(), rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(group, fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
