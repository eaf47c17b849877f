"""Metadata a person reads in the UI: polars frames as tables, figures as numbers."""

from __future__ import annotations

import dagster as dg
import polars as pl
import polars.selectors

from sessionbert_assets import headlines

_TYPES = {pl.String: "string", pl.Int64: "int", pl.Int32: "int", pl.UInt32: "int", pl.Float64: "float",
          pl.Boolean: "bool"}


TABLE_ROWS = 50  # rows a metadata table shows
SHORT_LIST = 10  # rows of a long list shown in place (the whole list is in the asset's artifact)


SERVES = " ◀"  # after the name of what serves (or the k chosen) in a table: a column of its own would widen it


def table(frame: pl.DataFrame, limit: int = TABLE_ROWS, descriptions: dict[str, str] | None = None) -> dg.MetadataValue:
    """A polars frame as a Dagster table (first `limit` rows), rates and probabilities to four decimals, with
    the columns' `descriptions` (the UI's *Show schema*) where a short header needs one."""
    shown = frame.head(limit).with_columns(pl.selectors.float().round(4))
    schema = dg.TableSchema(columns=[dg.TableColumn(name, _TYPES.get(dtype, "string"),
                                                    description=(descriptions or {}).get(name))
                                     for name, dtype in shown.schema.items()])
    rows = [dg.TableRecord({k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
                            for k, v in row.items()}) for row in shown.to_dicts()]
    return dg.MetadataValue.table(records=rows, schema=schema)


def date_range(frame: pl.DataFrame | pl.LazyFrame, column: str) -> str:
    """`2026-03-02 07:00:00 to 2026-04-30 23:59:59 UTC` (to the second), or `2026-03-02 to 2026-04-30`; a
    LazyFrame is read as a stream, a column at a time."""
    low, high = frame.lazy().select(pl.col(column).min(), pl.col(column).max().alias("_high")).collect(
        engine="streaming").row(0)
    if low is None:
        return "empty"
    if hasattr(low, "hour"):
        return f"{low:%Y-%m-%d %H:%M:%S} to {high:%Y-%m-%d %H:%M:%S} UTC"
    return f"{low} to {high}"


def evaluation_metadata(evaluation: dict) -> dict:
    """A next-activity evaluation as metadata: the headline, a scores table per head, what serves each head and
    why, and the served accuracy per head (one number each, to plot over runs)."""
    metadata = {"headline": headline(headlines.next_activity(evaluation)), **scores_tables(evaluation),
                "n_sessions": count(evaluation["n_sessions"])}
    for head in ("service", "page"):
        if head in evaluation.get("served", {}):
            metadata[f"{head}/served"] = served_reason(evaluation, head)
            metadata[f"{head}/accuracy"] = round(evaluation[head][evaluation["served"][head]]["accuracy"], 4)
    return metadata


def headline(text: str) -> dg.MetadataValue:
    """A headline's lines as Markdown line breaks (the UI runs plain text into one line, which a wide
    table beside it then cuts off); an indented line reads as the one above's continuation."""
    return dg.MetadataValue.md("  \n".join(("– " + line.strip()) if line.startswith(" ") else line
                                           for line in text.splitlines()))


def headline_first(context: dg.AssetExecutionContext, *then: str) -> None:
    """Reserve the first metadata entries for the headline and then the entries named (the tables a person
    checks it against), which the asset writes when it finishes: a later entry of the same name keeps the
    first one's place, so they open the page above what the resources report."""
    context.add_output_metadata(dict.fromkeys(("headline", *then), ""))


def streamed(frame: pl.LazyFrame, expression: pl.Expr):
    """One figure of a table too large for memory, as a stream: one query per figure (a query of several
    figures over different columns held 5.6 GiB on the paper's 7.4M sessions, one at a time 0.4)."""
    return frame.select(expression).collect(engine="streaming").item()


def count(n: int) -> dg.MetadataValue:
    """A count as people read it: 468,150."""
    return dg.MetadataValue.text(f"{int(n):,}")


def duration(seconds: float) -> dg.MetadataValue:
    """Seconds to the second, the unit named: `431 s (7.2 min)`."""
    return dg.MetadataValue.text(f"{seconds:,.0f} s" + (f" ({seconds / 60:.1f} min)" if seconds >= 120 else ""))


def served_reason(evaluation: dict, head: str) -> str:
    """`markov: validation accuracy 0.8190 against SessionBERT's 0.7750`, or SessionBERT's lead."""
    served, validation = evaluation["served"][head], evaluation["validation"][head]
    if served == "sessionbert":
        best_other = max((m for m in validation if m != "sessionbert"), key=validation.get)
        return (f"sessionbert: validation accuracy {validation['sessionbert']:.4f}, {best_other} "
                f"{validation[best_other]:.4f}")
    weight = f" (SessionBERT weight {evaluation['blend_weight'][head]:g})" if served == "sessionbert_markov" else ""
    return (f"{served}{weight}: validation accuracy {validation[served]:.4f} against SessionBERT's "
            f"{validation['sessionbert']:.4f}")


SCORE_COLUMNS = {"accuracy": "accuracy", "f1_weighted": "f1 w", "f1_macro": "f1 m"}
SCORE_DESCRIPTIONS = {"method": "◀ marks the method that serves this head (chosen on validation)",
                      "accuracy": "test accuracy", "f1 w": "test F1, weighted by class support",
                      "f1 m": "test F1, macro average over classes",
                      "val acc": "validation accuracy: what chose the method that serves"}


def scores_tables(evaluation: dict) -> dict:
    """A next-activity evaluation as one table per head (`service`, `page`), best test accuracy first: the
    method (◀ after what serves), the test figures and the validation accuracy that chose what serves.
    Short headers, described in the schema, so each fits the UI's value column at 1,600 px."""
    tables = {}
    for head in headlines.HEADS:
        validation = evaluation.get("validation", {}).get(head, {})
        served = evaluation.get("served", {}).get(head)
        rows = [{"method": method + (SERVES if method == served else ""),
                 **{SCORE_COLUMNS.get(k, k): round(v, 4) for k, v in figures.items()},
                 **({"val acc": validation.get(method)} if validation else {})}
                for method, figures in evaluation.get(head, {}).items()]
        if rows:
            tables[head] = table(pl.DataFrame(rows).sort("accuracy", descending=True),
                                 descriptions=SCORE_DESCRIPTIONS)
    return tables or {"scores": dg.MetadataValue.text("no sessions to evaluate")}


def figure(fig) -> dg.MetadataValue:
    """A matplotlib figure as a Markdown image the Dagster UI shows inline (PNG, base64)."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![figure](data:image/png;base64,{encoded})")


def registered_model_version(instance: dg.DagsterInstance) -> str | None:
    """The registry version of the fine-tuned model, from its latest materialization's metadata."""
    event = instance.get_latest_materialization_event(dg.AssetKey("finetuned_model"))
    entry = event.asset_materialization.metadata.get("model_version") if event and event.asset_materialization else None
    return str(entry.value) if entry is not None else None


def previous_value(context: dg.AssetExecutionContext, key: str):
    """What the latest materialization of this asset before this run recorded under `key` (None if nothing): how
    a retrain knows what the run before it read, e.g. the last day of its data (`data_until`)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    value = event.asset_materialization.metadata.get(key) if event and event.asset_materialization else None
    return value.value if value is not None else None
