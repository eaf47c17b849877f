"""Next-activity quality (paper Table 2): SessionBERT against the baselines and the ceiling, over seeds.

    python -m benchmarks.next_activity --profile small --seeds 0 1 2
    python -m benchmarks.next_activity --profile small --seeds 0 1 2 --from-homes /tmp/sessionbert-benchmark

For each seed: a new synthetic world, ingested, serialized and split as the pipeline does; the
tokenizer, MLM pretraining and multitask fine-tuning of the profile; then the test split scored
for SessionBERT, most popular, first-order Markov and the ceiling. Prints mean and standard
deviation over seeds, the quality bar, and writes benchmarks/results/next_activity-<profile>.json.
With --from-homes it reads the figures of whole Dagster graph runs (model_evaluation.json) instead.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

from sessionbert_core.config import get_profile
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.evaluation.next_activity import baseline_scores, mean_and_spread, scores
from sessionbert_core.model.inference import predict_next_activity
from sessionbert_core.model.tokenizer import train_and_choose
from sessionbert_core.model.train import TrainSettings, finetune, pretrain
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import load_truth

METHODS = ("sessionbert", "popularity", "markov", "ceiling")


def measure(profile_name: str, seed: int, folder: Path, every_cut: bool | None) -> dict:
    profile = get_profile(profile_name)
    world = generate_world(folder / "world", profile.world, seed)
    ingested = ingest_landing(world.landing, b"benchmark")
    sessions = split_sessions(serialize_sessions(ingested.events, ingested.billing), seed=seed)
    train, validation, test = (sessions.filter(pl.col("split") == s) for s in ("train", "validation", "test"))
    result = baseline_scores(train, test, load_truth(world.root, "sessions"))

    tokenizer, _ = train_and_choose(train["text"].to_list(), validation["text"].to_list(),
                                    validation["activities"].explode().drop_nulls())
    plan = profile.training if every_cut is None else replace(profile.training, finetune_every_cut=every_cut)
    started = time.perf_counter()
    pre_settings = TrainSettings.for_stage(plan, "pretrain", seed, profile.model.max_length)
    encoder, pre_summary = pretrain(tokenizer, train["text"].to_list(), validation["text"].to_list(),
                                    profile.model, pre_settings, folder / "pretrain-checkpoints", report=_quiet)
    encoder.save_pretrained(folder / "pretrained")
    pretrained = time.perf_counter()
    ft_settings = TrainSettings.for_stage(plan, "finetune", seed, profile.model.max_length)
    model, ft_summary = finetune(tokenizer, folder / "pretrained", train, validation, ft_settings,
                                 folder / "finetune-checkpoints", report=_quiet)
    finetuned = time.perf_counter()
    predictions = predict_next_activity(model, tokenizer, test, max_length=profile.model.max_length)
    result["service"]["sessionbert"] = scores(predictions["target_service"], predictions["predicted_service"])
    result["page"]["sessionbert"] = scores(predictions["target_page"], predictions["predicted_page"])
    result["seconds"] = {"pretrain": pretrained - started, "finetune": finetuned - pretrained,
                         "predict": time.perf_counter() - finetuned}
    result["pretrain"] = {k: v for k, v in pre_summary.items() if k != "settings"}
    result["finetune"] = {k: v for k, v in ft_summary.items() if k != "settings"}
    result["every_cut"] = ft_settings.every_cut
    return result


def _quiet(_: str) -> None:
    pass


def summarize(runs: dict[int, dict]) -> dict:
    summary = {}
    for head in ("service", "page"):
        for method in METHODS:
            for metric in ("accuracy", "f1_weighted", "f1_macro"):
                mean, spread = mean_and_spread(r[head][method][metric] for r in runs.values())
                summary[f"{head}/{method}/{metric}"] = {"mean": mean, "std": spread}
        mean, spread = mean_and_spread(r[head]["sessionbert"]["accuracy"] / r[head]["ceiling"]["accuracy"]
                                       for r in runs.values())
        summary[f"{head}/sessionbert_share_of_ceiling"] = {"mean": mean, "std": spread}
    return summary


def report(summary: dict, profile: str, seeds: list[int]) -> dict[str, bool]:
    """Print the table over seeds and the bar SessionBERT must clear; returns the bar."""
    print(f"\nnext activity on the test split, profile {profile}, seeds {seeds} (mean ± std)")
    print(f"{'method':<12} {'service F1w':>15} {'service acc':>15} {'page F1w':>15} {'page acc':>15}")
    for method in METHODS:
        cells = [f"{summary[f'{h}/{method}/{m}']['mean']:.4f} ± {summary[f'{h}/{method}/{m}']['std']:.4f}"
                 for h in ("service", "page") for m in ("f1_weighted", "accuracy")]
        print(f"{method:<12} " + " ".join(f"{c:>15}" for c in cells))

    def above_baselines(head):
        return summary[f"{head}/sessionbert/accuracy"]["mean"] > max(summary[f"{head}/{m}/accuracy"]["mean"]
                                                                     for m in ("popularity", "markov"))

    bar = {"service above both baselines": above_baselines("service"),
           "service at least 90% of ceiling": summary["service/sessionbert_share_of_ceiling"]["mean"] >= 0.9,
           "page above both baselines": above_baselines("page")}
    print(f"\nservice accuracy = {summary['service/sessionbert_share_of_ceiling']['mean']:.1%} of the ceiling, "
          f"page accuracy = {summary['page/sessionbert_share_of_ceiling']['mean']:.1%} of the ceiling")
    for claim, held in bar.items():
        print(f"  {'PASS' if held else 'MISS'}  {claim}")
    return bar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--every-cut", choices=["profile", "yes", "no"], default="profile",
                        help="fine-tune on every activity as a target, or the last only (default: the profile's)")
    parser.add_argument("--from-homes", type=Path,
                        help="read model_evaluation.json of whole-graph runs in <dir>/<profile>-seed<N>/ (as "
                             "benchmarks/personas_and_recommendations.py leaves them) instead of training here")
    args = parser.parse_args()
    every_cut = None if args.every_cut == "profile" else args.every_cut == "yes"
    runs = {}
    for seed in args.seeds:
        if args.from_homes:
            runs[seed] = json.loads((args.from_homes / f"{args.profile}-seed{seed}" / "model_evaluation.json")
                                    .read_text())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                runs[seed] = measure(args.profile, seed, Path(tmp), every_cut)
        print(f"seed {seed}: service {runs[seed]['service']['sessionbert']['accuracy']:.4f}, "
              f"page {runs[seed]['page']['sessionbert']['accuracy']:.4f}, "
              f"{sum(runs[seed].get('seconds', {}).values()):.0f} s training here", flush=True)
    summary = summarize(runs)
    bar = report(summary, args.profile, args.seeds)
    out = Path(__file__).parent / "results" / f"next_activity-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "seeds": args.seeds, "summary": summary, "bar": bar,
                               "source": f"graph runs in {args.from_homes}" if args.from_homes else "trained here",
                               "runs": {str(k): v for k, v in runs.items()}}, indent=2, default=str) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
