"""SessionBERT: the tokenizer, MLM pretraining, multitask fine-tuning and the next-activity evaluation."""

import hashlib
import json
import shutil
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from mlflow import MlflowClient
from transformers import AutoTokenizer

from sessionbert_assets.charts import line_chart
from sessionbert_assets.checks import CHAMPION
from sessionbert_assets.headlines import HEADS
from sessionbert_assets.metadata import (
    SERVES,
    count,
    duration,
    evaluation_metadata,
    headline_first,
    registered_model_version,
    table,
)
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core import storage
from sessionbert_core.config import encoder_candidates
from sessionbert_core.evaluation import gates
from sessionbert_core.evaluation.choice import CANDIDATES_PER_SOURCE, choose_next_activity
from sessionbert_core.evaluation.next_activity import scores
from sessionbert_core.model.inference import predict_next_activity
from sessionbert_core.model.networks import load_next_activity_model
from sessionbert_core.model.precision import Precision
from sessionbert_core.model.tokenizer import KNOWN_ACTIVITIES, train_and_choose
from sessionbert_core.model.train import FinetuneTask, TrainSettings
from sessionbert_core.model.training_job import TrainingJob, run_job

TRAINING_RETRIES = dg.RetryPolicy(max_retries=2, delay=5)


def _split(sessions: pl.DataFrame, name: str) -> pl.DataFrame:
    return sessions.filter(pl.col("split") == name)


def _checkpoints(home: Path, asset: str, *parts: object) -> Path:
    """Checkpoint folder of one training: the same inputs and settings resume, anything else starts afresh."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts], sort_keys=True).encode()).hexdigest()[:16]
    return home / "checkpoints" / asset / digest


def _stamp(path: Path) -> str:
    """What a table's files are now (one file or its parts): a changed table changes the stamp."""
    stats = [p.stat() for p in (storage.part_paths(path) if path.is_dir() else [path])]
    return f"{path}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def _train(context: dg.AssetExecutionContext, compute: ComputeResource, pipes: dg.PipesClient,
           job: TrainingJob) -> dict:
    """The training summary of `job`, trained here or in the external process the compute resource asks for."""
    if not compute.external():
        return run_job(job, report=context.log.info,
                       metrics=lambda metrics, step: mlflow.log_metrics(metrics, step=step))
    context.log.info(f"launching {job.stage} through Dagster Pipes: {' '.join(compute.training_command())}")
    invocation = pipes.run(context=context, command=compute.training_command(), extras={"job": job.to_dict()},
                           env=compute.training_env())
    summaries = [m["summary"] for m in invocation.get_custom_messages() if isinstance(m, dict) and "summary" in m]
    if not summaries:
        raise dg.Failure(description=f"the external {job.stage} process ended without reporting its training summary")
    reported = invocation.get_materialize_result().metadata
    context.add_output_metadata({"launched": f"external process through Dagster Pipes, {compute.num_processes} "
                                             f"process(es)", "external_keys_reported": len(reported)})
    return summaries[-1]


# after quarantined_events: its blocking check (the quarantine share) holds back all training on a bad ingest
@dg.asset(group_name="model", kinds={"huggingface", "mlflow"}, deps=["quarantined_events"])
def tokenizer(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, mlflow_tracking: MlflowResource,
              session_splits: pl.DataFrame) -> Path:
    """The session tokenizer, trained on the train split's texts (vocabulary at most 30k).

    WordLevel, WordPiece and BPE are all trained and measured on the validation split; the rule in
    `sessionbert_core.model.tokenizer` picks one (lowest unknown-token rate, then fewest tokens per
    session). Saved so `AutoTokenizer.from_pretrained` loads it.
    """
    train, validation = _split(session_splits, "train"), _split(session_splits, "validation")
    chosen, comparison = train_and_choose(train["text"].to_list(), validation["text"].to_list(),
                                          validation["activities"].explode().drop_nulls())
    best = next(row for row in comparison if row["chosen"])
    home = sessionbert.home_path
    with mlflow_tracking.run(context, home):
        known = sorted(train["activities"].explode().drop_nulls().unique().to_list())
        target = storage.save_pretrained(home / "tokenizer", chosen, records={KNOWN_ACTIVITIES: known})
        mlflow.log_params({"kind": best["kind"], "train_sessions": train.height})
        mlflow.log_metrics({k: float(v) for k, v in best.items() if isinstance(v, int | float)
                            and not isinstance(v, bool)})
        mlflow.log_artifacts(str(target), artifact_path="tokenizer")
    context.add_output_metadata({
        "kind": best["kind"],
        "vocabulary_size": best["vocabulary_size"],
        "unknown_token_rate": round(best["unknown_token_rate"], 6),
        "mean_tokens_per_session": round(best["mean_tokens_per_session"], 2),
        "activities_as_one_token": round(best["activities_as_one_token"], 4),
        "comparison": _tokenizer_table(comparison),
    })
    return target


TOKENIZER_COLUMNS = {"kind": "kind", "vocabulary_size": "vocabulary", "unknown_token_rate": "unknown",
                     "mean_tokens_per_session": "tokens", "activities_as_one_token": "one token"}
TOKENIZER_DESCRIPTIONS = {"kind": "the tokenizer trained (◀ the one chosen)", "vocabulary": "its vocabulary size",
                          "unknown": "share of validation tokens unknown to it",
                          "tokens": "mean tokens per validation session",
                          "one token": "share of validation activities it keeps as one token"}


def _tokenizer_table(comparison: list[dict]) -> dg.MetadataValue:
    """The tokenizers compared, short headers (described in the schema) so the table fits at 1,600 px."""
    rows = [{TOKENIZER_COLUMNS[k]: (f"{v}{SERVES}" if k == "kind" and row["chosen"] else v)
             for k, v in row.items() if k in TOKENIZER_COLUMNS} for row in comparison]
    return table(pl.DataFrame(rows), descriptions=TOKENIZER_DESCRIPTIONS)


@dg.asset(group_name="model", kinds={"pytorch", "huggingface", "mlflow"}, pool="gpu", retry_policy=TRAINING_RETRIES)
def pretrained_model(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, compute: ComputeResource,
                     mlflow_tracking: MlflowResource, training_pipes: dg.PipesSubprocessClient, tokenizer: Path,
                     session_splits: pl.DataFrame) -> dg.Output[Path]:
    """SessionBERT: a BertForMaskedLM trained from scratch on the train split's sessions.

    15% of the activity tokens of each session (at least one, never all) are masked afresh in every
    batch; validation loss picks the best checkpoint and stops training early. The profile sets
    the largest encoder and the steps; where the data is smaller than the profile was sized for
    (epochs repeat), an encoder of half its width and depth trains too, and the lower validation
    loss serves (`sessionbert_core.config.encoder_candidates`). Resumes from its last checkpoint
    when Dagster retries it. Runs here, or (the compute resource's `launcher: pipes`, or
    `num_processes` above 1 for DDP through torchrun) in an external process through Dagster
    Pipes, which streams its logs back and reports the same metadata.
    """
    home, profile = sessionbert.home_path, sessionbert.profile_settings
    settings = compute.train_settings(profile.training, "pretrain", sessionbert.seed, profile.model.max_length)
    precision = compute.report_precision(context)
    sizes = encoder_candidates(profile.model, settings.repeats_epochs(_split(session_splits, "train").height))
    trained = {}
    with mlflow_tracking.run(context, home):
        mlflow.log_params(_params(settings, precision) | {f"model_{k}": v for k, v in vars(profile.model).items()}
                          | {"processes": compute.num_processes, "launcher": compute.launcher,
                             "encoder_candidates": ", ".join(sizes)})
        for name, size in sizes.items():
            trained[name] = _pretrain(context, compute, training_pipes, job_of=partial(
                TrainingJob, "pretrain", str(tokenizer), str(home / "session_splits.parquet"),
                str(_checkpoints(home, "pretrained_model", settings, size, _stamp(tokenizer / "tokenizer.json"),
                                 _stamp(home / "session_splits.parquet"))),
                str(home / "pretrained_candidates" / name), asdict(settings), asdict(size)),
                tracking=mlflow_tracking.uri(home), name=name, nested=len(sizes) > 1)
        served = min(trained, key=lambda name: trained[name]["best_validation_loss"] or float("inf"))
        target = storage.replace_folder(home / "pretrained_candidates" / served, home / "pretrained_model")
        summary = trained[served]
        mlflow.log_params({"encoder": served})
        mlflow.log_metrics(_numbers(summary))
        mlflow.log_artifacts(str(target), artifact_path="pretrained_model")
    shutil.rmtree(home / "checkpoints" / "pretrained_model", ignore_errors=True)
    shutil.rmtree(home / "pretrained_candidates", ignore_errors=True)
    context.add_output_metadata(_training_metadata(summary, settings) | _encoders_metadata(trained, served))
    return dg.Output(target)  # an Output, not the bare path: a step that used Pipes must return typed events


def _encoders_metadata(trained: dict[str, dict], served: str) -> dict:
    rows = [{"encoder": name, "best_validation_loss": round(t["best_validation_loss"], 4), "steps": t["steps"],
             "epochs": t["epochs"], "parameters": f"{t['parameters']:,}", "seconds": round(t["seconds"])}
            for name, t in trained.items()]
    return {"encoder": served, "encoders": table(pl.DataFrame(rows)),
            "encoder_rule": "lowest validation loss" if len(trained) > 1 else "the profile's (data ample)"}


def _pretrain(context: dg.AssetExecutionContext, compute: ComputeResource, pipes: dg.PipesClient, job_of,
              tracking: str, name: str, nested: bool) -> dict:
    """One encoder candidate's training summary; with several, each in a nested MLflow run of its own."""
    run = mlflow.start_run(run_name=f"encoder {name}", nested=True) if nested else nullcontext(mlflow.active_run())
    with run as active:
        summary = _train(context, compute, pipes, job_of(mlflow={"tracking_uri": tracking,
                                                                 "run_id": active.info.run_id}))
        if nested:
            mlflow.log_params({"encoder": name})
            mlflow.log_metrics(_numbers(summary))
        return summary


class FinetuneConfig(dg.Config):
    task: FinetuneTask = "multitask"  # or service / page: the single-task ablations


@dg.asset(group_name="model", kinds={"pytorch", "huggingface", "mlflow"}, pool="gpu", retry_policy=TRAINING_RETRIES)
def finetuned_model(context: dg.AssetExecutionContext, config: FinetuneConfig, sessionbert: SessionBertResource,
                    compute: ComputeResource, mlflow_tracking: MlflowResource,
                    training_pipes: dg.PipesSubprocessClient, tokenizer: Path, pretrained_model: Path,
                    session_splits: pl.DataFrame) -> dg.Output[Path]:
    """The pretrained encoder with a next-service head and a next-page head, trained jointly.

    Inputs are train sessions without their last activity, ending in a [MASK] slot where the next
    activity goes; the targets are that activity's service and page. `task: service` or `page`
    trains one head only. Each model is registered as a new version in the MLflow Model Registry.
    """
    home, profile = sessionbert.home_path, sessionbert.profile_settings
    settings = compute.train_settings(profile.training, "finetune", sessionbert.seed, profile.model.max_length)
    precision = compute.report_precision(context)
    checkpoints = _checkpoints(home, "finetuned_model", settings, config.task, _stamp(pretrained_model / "config.json"),
                               _stamp(home / "session_splits.parquet"))
    with mlflow_tracking.run(context, home) as run:
        mlflow.log_params(_params(settings, precision) | {"task": config.task, "processes": compute.num_processes,
                                                          "launcher": compute.launcher})
        job = TrainingJob("finetune", str(tokenizer), str(home / "session_splits.parquet"), str(checkpoints),
                          str(home / "finetuned_model"), asdict(settings), asdict(profile.model),
                          encoder=str(pretrained_model), task=config.task,
                          mlflow={"tracking_uri": mlflow_tracking.uri(home), "run_id": run.info.run_id})
        summary = _train(context, compute, training_pipes, job)
        target = home / "finetuned_model"
        mlflow.log_metrics(_numbers(summary))
        mlflow.log_artifacts(str(target), artifact_path="finetuned_model")
        version = mlflow_tracking.register(run, "finetuned_model", f"{config.task} fine-tuning, Dagster run "
                                                                   f"{context.run_id}")
    shutil.rmtree(checkpoints, ignore_errors=True)
    context.add_output_metadata(_training_metadata(summary, settings) | {
        "task": config.task, "registered_model": f"{mlflow_tracking.registered_model} version {version}",
        "model_version": version, "services": summary["n_services"], "pages": summary["n_pages"]})
    return dg.Output(target)


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow", "json"}, pool="gpu")
def model_evaluation(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, compute: ComputeResource,
                     mlflow_tracking: MlflowResource, finetuned_model: Path, session_splits: pl.DataFrame,
                     next_activity_baselines: dict, next_activity_peers: pl.DataFrame) -> dict:
    """Next service and next page of the test split (paper Table 2): SessionBERT beside the baselines,
    and the method that serves each head, chosen on the validation split.

    Accuracy, weighted F1 and macro F1 per head, for SessionBERT, most popular, first-order Markov, the peers
    (`next_activity_peers`: higher-order Markov, V-SKNN, GRU4Rec, SASRec), SessionBERT blended with Markov
    (its weight fit on validation) and, on the synthetic world, the ceiling. `served` names each head's best
    method on validation among all of them (the simplest within one standard error of the best).
    Written to model_evaluation.json and MLflow.
    """
    home = sessionbert.home_path
    headline_first(context, *HEADS)
    precision = compute.report_precision(context)
    model = load_next_activity_model(finetuned_model, precision.device, precision.bf16)
    tok = AutoTokenizer.from_pretrained(finetuned_model)
    predict = partial(predict_next_activity, model, tok, top_k=CANDIDATES_PER_SOURCE, bf16=precision.bf16)
    predictions, validation = predict(_split(session_splits, "test")), predict(_split(session_splits, "validation"))
    storage.write_parquet(predictions, home / "model_evaluation_predictions.parquet")
    by_peer = {(name, part): frame for (name, part), frame in next_activity_peers.partition_by(
        ["peer", "split"], as_dict=True).items()}
    choice = choose_next_activity(_split(session_splits, "train"), validation, predictions,
                                  {name: frame for (name, part), frame in by_peer.items() if part == "validation"})
    evaluation = json.loads(json.dumps(next_activity_baselines))
    for head, column in (("service", "predicted_service"), ("page", "predicted_page")):
        evaluation[head]["sessionbert"] = scores(predictions[f"target_{head}"], predictions[column])
        for (name, part), frame in by_peer.items():
            if part == "test":
                evaluation[head][name] = scores(frame[f"target_{head}"], frame[column])
        evaluation[head] |= choice["test"][head]
    evaluation |= {key: choice[key] for key in ("served", "blend_weight", "validation")}
    evaluation["n_sessions"] = predictions.height
    with mlflow_tracking.run(context, home):
        mlflow.log_params(precision.metadata() | {f"served_{h}": m for h, m in choice["served"].items()})
        mlflow.log_metrics({f"{head}_{method}_{metric}": value for head in ("service", "page")
                            for method, figures in evaluation[head].items() for metric, value in figures.items()})
    context.add_output_metadata(evaluation_metadata(evaluation))
    return evaluation


def _params(settings: TrainSettings, precision: Precision) -> dict:
    return dict(vars(settings)) | precision.metadata()


def _numbers(summary: dict) -> dict[str, float]:
    return {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _training_charts(summary: dict) -> dict:
    """Loss by step (training and validation) and, when fine-tuning, each head's validation accuracy by step,
    as charts the UI shows in place (every logged point is in the MLflow run's metrics)."""
    charts = {"loss_by_step": line_chart({"training": summary.get("training_curve") or [],
                                          "validation": summary.get("validation_curve") or []}, "step", "loss")}
    if summary.get("validation_accuracy"):
        accuracy = summary["validation_accuracy"]
        charts["validation_accuracy_by_step"] = line_chart(
            {"service": [(p[0], p[1]) for p in accuracy], "page": [(p[0], p[2]) for p in accuracy]},
            "step", "validation accuracy")
    return charts


def _training_metadata(summary: dict, settings: TrainSettings) -> dict:
    return {
        "steps": count(summary["steps"]), "epochs": summary["epochs"], "training_time": duration(summary["seconds"]),
        "useful_tokens_seen": count(summary.get("useful_tokens_seen", 0)),
        **_training_charts(summary),
        "best_validation_loss": round(summary["best_validation_loss"] or float("nan"), 4),
        "useful_tokens_per_second": count(summary["useful_tokens_per_second"]),
        "parameters": count(summary["parameters"]), "train_sessions": count(summary["train_sessions"]),
        "resumed_from": summary["resumed_from"] or "none", "stopped_early": summary["stopped_early"],
        "device": settings.device, "precision": summary["precision"],
    }


@dg.asset(group_name="model", kinds={"mlflow"})
def champion_model(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                   mlflow_tracking: MlflowResource, model_evaluation: dict) -> dict:
    """The registry's champion: the model version just evaluated, once it passed the quality gate (a
    blocking check on `model_evaluation`: a model that fails it never gets here). Tagged with what
    serves each head and that accuracy, which the next model's gate compares against."""
    mlflow.set_tracking_uri(mlflow_tracking.uri(sessionbert.home_path))
    client, name = MlflowClient(), mlflow_tracking.registered_model
    version = registered_model_version(context.instance)
    if version is None:
        context.add_output_metadata({"champion": "no registered version to promote"})
        return {"name": name, "version": None}
    served = {head: gates.served_method(model_evaluation, head) for head in ("service", "page")}
    for head, method in served.items():
        client.set_model_version_tag(name, version, f"{head}_accuracy",
                                     str(gates.served_accuracy(model_evaluation, head)))
        client.set_model_version_tag(name, version, f"{head}_served", method)
    client.set_registered_model_alias(name, CHAMPION, version)
    context.add_output_metadata({"champion": f"{name} version {version} (alias {CHAMPION})",
                                 **{f"{head}_served": method for head, method in served.items()}})
    return {"name": name, "version": version, "served": served}

