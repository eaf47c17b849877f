"""Quality gates as blocking asset checks: a failing gate stops everything downstream in the run.

So a bad ingest trains nothing, and a fine-tuned model that loses to popularity, or falls more than
the allowed margin below the model in production, never refreshes the recommendation table: the
previous table stays served. A model that passes becomes the registry's `champion`.
"""

from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import Field

from sessionbert_assets.metadata import registered_model_version, table
from sessionbert_assets.partitions import LANDING_FILES
from sessionbert_assets.resources import MlflowResource, SessionBertResource
from sessionbert_core import storage
from sessionbert_core.data.ingest import cached_outcome, content_digest, discover
from sessionbert_core.evaluation import gates
from sessionbert_core.model.tokenizer import measure
from sessionbert_core.recommend.ranking import used_services

CHAMPION = "champion"


class QualityGatesResource(dg.ConfigurableResource):
    """Thresholds of the quality gates (sessionbert_core.evaluation.gates holds the rules)."""

    quarantine_share_limit: float = Field(default=gates.QUARANTINE_SHARE_LIMIT,
                                          description="largest share of quarantined rows an ingest may have")
    unknown_token_limit: float = Field(default=gates.UNKNOWN_TOKEN_LIMIT,
                                       description="largest [UNK] share of validation tokens")
    margin_over_popularity: float = Field(default=gates.MARGIN_OVER_POPULARITY,
                                          description="accuracy what serves must reach above popularity, per head")
    max_drop_from_champion: float = Field(default=gates.MAX_DROP_FROM_CHAMPION,
                                          description="accuracy a new model may lose against the champion")


@dg.asset_check(asset="quarantined_events", blocking=True,
                description="The share of quarantined rows (over every day) stays under the limit, or nothing trains "
                            "on the ingest (the tokenizer waits for this check).")
def check_quarantine_share(sessionbert: SessionBertResource, quality_gates: QualityGatesResource
                           ) -> dg.AssetCheckResult:
    home = sessionbert.home_path
    kept, quarantined = (storage.scan_table(home / f"{name}.parquet").select(pl.len()).collect().item()
                         for name in ("raw_sessions", "quarantined_events"))
    share = gates.quarantine_share(kept, quarantined)
    return dg.AssetCheckResult(passed=share <= quality_gates.quarantine_share_limit,
                               metadata={"share": round(share, 6), "limit": quality_gates.quarantine_share_limit,
                                         "quarantined": quarantined})


@dg.asset_check(asset="landing_files", blocking=True, partitions_def=LANDING_FILES,
                description="Each file's rows are all accounted for: read = valid + quarantined + filtered, counted "
                            "again from its stored parse. Each file's quarantine share is shown beside it (the limit "
                            "itself holds for the whole ingest, on raw_sessions).")
def check_files_are_conserved(context: dg.AssetCheckExecutionContext, sessionbert: SessionBertResource,
                              quality_gates: QualityGatesResource) -> dg.AssetCheckResult:
    files = {f.name: f for f in discover(sessionbert.landing_path(), sessionbert.pseudonym_key())}
    rows, broken, missing = [], [], []
    for key in context.partition_keys:
        if key not in files or files[key].kind in ("ignored", "mapping"):
            continue
        outcome = cached_outcome(sessionbert.home_path / "ingest_cache", key, content_digest(files[key].path))
        if outcome is None:  # refused (unreadable), so nothing is cached: raw_sessions quarantines it whole
            missing.append(key)
            continue
        share = gates.quarantine_share(outcome["valid"], outcome["quarantined"])
        rows.append({"file": key, **outcome, "quarantine_share": round(share, 4)})
        if outcome["read"] != outcome["valid"] + outcome["quarantined"] + outcome["filtered"]:
            broken.append(key)
    over = [row["file"] for row in rows if row["quarantine_share"] > quality_gates.quarantine_share_limit]
    return dg.AssetCheckResult(passed=not broken, metadata={
        "files": table(pl.DataFrame(rows)) if rows else "none", "not_conserved": ", ".join(broken) or "none",
        "refused_files": ", ".join(missing) or "none",
        "files_over_the_quarantine_limit": ", ".join(over) or "none",
        "quarantine_share_limit": quality_gates.quarantine_share_limit})


@dg.asset_check(asset="tokenizer", blocking=True, additional_ins={"session_splits": dg.AssetIn()},
                description="The tokenizer's [UNK] share on validation sessions stays under the limit.")
def check_unknown_token_rate(tokenizer: Path, session_splits: pl.DataFrame,
                             quality_gates: QualityGatesResource) -> dg.AssetCheckResult:
    from transformers import AutoTokenizer

    validation = session_splits.filter(pl.col("split") == "validation")
    stats = measure(AutoTokenizer.from_pretrained(tokenizer), "saved", validation["text"].to_list(),
                    validation["activities"].explode().drop_nulls())
    return dg.AssetCheckResult(passed=stats.unknown_token_rate <= quality_gates.unknown_token_limit,
                               metadata={"unknown_token_rate": round(stats.unknown_token_rate, 6),
                                         "limit": quality_gates.unknown_token_limit})


@dg.asset_check(asset="model_evaluation", blocking=True,
                description="What serves each head (chosen on validation among SessionBERT, its blend with "
                            "Markov, Markov and popularity) does not lose to popularity, and is not worse than the "
                            "champion by more than the margin. A pure check: passing lets `champion_model` promote "
                            "the model; failing keeps the champion and the recommendation table as they are.")
def check_model_beats_popularity_and_champion(context: dg.AssetCheckExecutionContext, model_evaluation: dict,
                                              sessionbert: SessionBertResource, mlflow_tracking: MlflowResource,
                                              quality_gates: QualityGatesResource) -> dg.AssetCheckResult:
    mlflow.set_tracking_uri(mlflow_tracking.uri(sessionbert.home_path))
    client = MlflowClient()
    name = mlflow_tracking.registered_model
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    figures = {head: float(champion.tags[f"{head}_accuracy"]) for head in ("service", "page")
               if champion is not None and f"{head}_accuracy" in champion.tags}
    verdict = gates.model_verdict(model_evaluation, figures or None, quality_gates.margin_over_popularity,
                                  quality_gates.max_drop_from_champion)
    version = registered_model_version(context.instance)
    return dg.AssetCheckResult(passed=verdict.passed, metadata={
        "reasons": "; ".join(verdict.reasons) or "passed", **_compared(verdict),
        "model_version": version or "unregistered",
        "champion": champion.version if champion is not None else "none",
        "next": "the `champion_model` asset promotes it" if verdict.passed else "the champion stays",
    })


def _compared(verdict) -> dict:
    """The figures the model check compared: a sentence, then each as its own entry (to plot over runs)."""
    def said(f: dict) -> str:
        champion = (f", champion {f['champion']:.4f} less {f['allowed_drop']:.4f} allowed" if f["champion"] is not None
                    else ", no champion yet")
        return (f"{f['served']} {f['accuracy']:.4f} against popularity {f['popularity']:.4f} plus the margin "
                f"(needs {f['needed']:.4f})" + champion)

    entries = {f"{head}/{key}": round(value, 4) if isinstance(value, float) else str(value)
               for head, figures in verdict.figures.items() for key, value in figures.items()}
    return {"compared": "; ".join(f"{head}: {said(f)}" for head, f in verdict.figures.items()), **entries}


@dg.asset_check(asset="recommendation_table", blocking=True,
                additional_ins={"session_splits": dg.AssetIn(), "billing_records": dg.AssetIn()},
                description="No recommended service was used before; at most 5 per user, ranked 1..n.")
def check_recommendations_are_new_and_few(recommendation_table: pl.DataFrame, session_splits: pl.DataFrame,
                                          billing_records: pl.DataFrame) -> dg.AssetCheckResult:
    problems = gates.recommendation_problems(recommendation_table, used_services(session_splits, billing_records))
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none",
                                                              "rows": recommendation_table.height})


all_checks = [check_files_are_conserved, check_quarantine_share, check_unknown_token_rate,
              check_model_beats_popularity_and_champion, check_recommendations_are_new_and_few]
