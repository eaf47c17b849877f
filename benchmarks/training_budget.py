"""What a training budget buys: pretraining and fine-tuning at several learning rates and epoch counts,
each scored on the test split, with its wall time, in the precision the pipeline resolves.

    python -m benchmarks.training_budget --home /tmp/sb-base --runs 5e-4:3:5e-4:3 1.5e-3:1.5:1.5e-3:1.5
    SESSIONBERT_PRECISION=fp32 python -m benchmarks.training_budget --home /tmp/sb-base --runs ...

Each run is `pretrain_lr:pretrain_epochs:finetune_lr:finetune_epochs`, trained from scratch on the
train split of a finished graph home (its tokenizer and session_splits.parquet), with the profile's
other settings. Prints one row per run and writes benchmarks/results/training_budget-<profile>.json.
Run it alone: two trainings on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
from transformers import AutoTokenizer

from sessionbert_core.config import get_profile
from sessionbert_core.evaluation.next_activity import scores
from sessionbert_core.model.inference import predict_next_activity
from sessionbert_core.model.precision import resolve_precision
from sessionbert_core.model.train import TrainSettings, finetune, pretrain

RESULTS = Path(__file__).resolve().parent / "results"


def measure(home: Path, profile_name: str, run: str, seed: int) -> dict:
    pre_lr, pre_epochs, ft_lr, ft_epochs = (float(x) for x in run.split(":"))
    profile = get_profile(profile_name)
    sessions = pl.read_parquet(home / "session_splits.parquet")
    train, validation, test = (sessions.filter(pl.col("split") == s) for s in ("train", "validation", "test"))
    tokenizer = AutoTokenizer.from_pretrained(home / "tokenizer")
    plan = profile.training
    base = {"seed": seed, "max_length": profile.model.max_length}
    pre = replace(TrainSettings.for_stage(plan, "pretrain", **base), learning_rate=pre_lr, epochs=pre_epochs)
    ft = replace(TrainSettings.for_stage(plan, "finetune", **base), learning_rate=ft_lr, epochs=ft_epochs)
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        encoder, pre_summary = pretrain(tokenizer, train["text"].to_list(), validation["text"].to_list(),
                                        profile.model, pre, Path(scratch) / "pre", quiet)
        encoder.save_pretrained(Path(scratch) / "encoder")
        pretrained = time.perf_counter()
        model, ft_summary = finetune(tokenizer, Path(scratch) / "encoder", train, validation, ft,
                                     Path(scratch) / "ft", report=quiet)
        finetuned = time.perf_counter()
    predictions = predict_next_activity(model, tokenizer, test, max_length=profile.model.max_length)
    return {"run": run, "seed": seed, "precision": resolve_precision().name,
            "pretrain_seconds": round(pretrained - started, 1), "finetune_seconds": round(finetuned - pretrained, 1),
            "pretrain_steps": pre_summary["steps"], "finetune_steps": ft_summary["steps"],
            "pretrain_validation_loss": round(pre_summary["best_validation_loss"], 4),
            "finetune_validation_loss": round(ft_summary["best_validation_loss"], 4),
            "service_accuracy": round(scores(predictions["target_service"], predictions["predicted_service"])
                                      ["accuracy"], 4),
            "page_accuracy": round(scores(predictions["target_page"], predictions["predicted_page"])["accuracy"], 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a finished graph's SESSIONBERT_HOME")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", required=True, help="pretrain_lr:epochs:finetune_lr:epochs")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    output = args.output or RESULTS / f"training_budget-{args.profile}.json"
    kept = json.loads(output.read_text()) if output.exists() else []
    for run in args.runs:
        row = measure(args.home, args.profile, run, args.seed)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        kept.append(row)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(kept, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()
