"""Two ways to train faster, measured: a larger batch (fewer, larger matrix products) and torch.compile
on the training step, against the profile's batch, in the precision the pipeline resolves.

    python -m benchmarks.training_levers --home .sessionbert
    SESSIONBERT_PRECISION=fp32 python -m benchmarks.training_levers --home .sessionbert

Each row is one epoch slice of `--sessions` training sessions of a finished graph home (its tokenizer,
pretrained_model and session_splits.parquet), timed by `benchmarks.perf.timed_training` after its first
steps (after 20 steps with torch.compile, so that the first compilations fall outside the timed span;
its wall time, compilation included, is in `wall_seconds`). Throughput only: a batch size that trains
faster still needs its quality checked over seeds (`benchmarks.training_budget`) before a profile takes
it. Prints a table and writes benchmarks/results/training_levers-<profile>-<precision>.json. Run it
alone: two trainings on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

from benchmarks.perf import RESULTS, machine, timed_training
from sessionbert_core.config import get_profile
from sessionbert_core.model import train
from sessionbert_core.model.precision import resolve_precision


def measure(home: Path, profile, stage: str, batch: int, compiled: bool, sessions: int) -> dict:
    plan = replace(profile.training, batch_size=batch, min_steps=0)  # one epoch slice, not the profile's floor
    arguments = train.TrainingArguments
    compiling = mock.patch.object(train, "TrainingArguments",
                                  lambda *a, **k: arguments(*a, **k, torch_compile=True))
    started = time.perf_counter()
    with compiling if compiled else contextlib.nullcontext():
        result = timed_training(home, replace(profile, training=plan), stage, sessions,
                                steps_to_skip=20 if compiled else 3)
    return {"stage": stage, "batch_size": batch, "torch_compile": compiled,
            "wall_seconds": round(time.perf_counter() - started, 1), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a finished graph's SESSIONBERT_HOME")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--sessions", type=int, default=8192, help="training sessions of the timed epoch slice")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args()
    profile = get_profile(args.profile)
    runs = [(batch, False) for batch in args.batch_sizes] + [(profile.training.batch_size, True)]
    rows = [measure(args.home, profile, stage, batch, compiled, args.sessions)
            for batch, compiled in runs for stage in ("pretrain", "finetune")]
    print(f"{'stage':<9} {'batch':>5} {'compile':>7} {'tokens/s':>9} {'GFLOP/s':>8} {'steps':>6} {'wall s':>7}")
    for row in rows:
        print(f"{row['stage']:<9} {row['batch_size']:>5} {row['torch_compile']!s:>7} "
              f"{row['useful_tokens_per_second']:>9,} {row['gflops_per_second']:>8} {row['steps']:>6} "
              f"{row['wall_seconds']:>7}")
    precision = resolve_precision().name
    out = RESULTS / f"training_levers-{args.profile}-{precision}.json"
    out.write_text(json.dumps({"profile": args.profile, "precision": precision, "machine": machine(),
                               "sessions": args.sessions, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
