"""Performance: the machine's ceilings, training and inference cost, and how the pipeline grows with the data.

    python -m benchmarks.perf --profile small                  # everything (`make bench`)
    python -m benchmarks.perf --sections ceilings training inference
    python -m benchmarks.perf --sections paper_data           # the paper's 7.4M sessions through the data assets

Sections (each prints its rows; one table at the end; JSON in benchmarks/results/perf-<profile>.json):

- ceilings: a 2048^3 matrix product in bf16 and fp32 through torch (GFLOP/s), measured in this run,
  and one shaped like the model's own products (tokens x hidden x intermediate); with the CPU model,
  its bf16 instructions and the precision the pipeline resolves on it (SESSIONBERT_PRECISION);
- pipeline: the whole graph (`sessionbert run`) in a fresh SESSIONBERT_HOME, per asset: seconds and
  the process's peak resident memory during the step (and its rise over the step's start);
- training: MLM pretraining and fine-tuning on the graph's data, in useful (non-padding) tokens per
  second over timed steps (evaluation excluded), the share of computed positions that are padding,
  and model FLOP utilization: (6 x encoder parameters + attention) x useful tokens/s over the ceiling
  of the precision in use (measured in the same run; `precision` says which, and why). Encoder
  parameters exclude the embeddings (and the vocabulary projection tied to them);
- inference: session embedding and recommendation, in sessions and users per second, with the
  utilization computed the same way (2 x encoder parameters + attention per token);
- scaling: ingestion, serialization, a training epoch, embedding, clustering and recommendation at
  1x, 2x and 4x the profile's users, each stage in its own process: seconds, peak memory, and the
  working memory (peak over what the process held once its inputs were loaded, minus its output);
- paper_data (only when named): the data assets of the `paper` profile (200k users, 7.4M sessions) through
  the asset graph, each materialized by `sessionbert run --select` in its own process (landing_folder
  generating the world, landing_files parsing each file alone, raw_sessions combining each day alone,
  quarantined_events counting every file, session_splits serializing day by day): seconds, peak memory,
  what each wrote, and the rows; then the same after one more day lands, the assets by day run on that day
  alone (`--days`). `--paper-profile small` rehearses it on a small world.

Run it alone: two training jobs on two cores slow each other down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MIB = 2**20


# ----------------------------------------------------------------------------------------------
# FLOPs


def encoder_parameters(model: torch.nn.Module) -> int:
    """Parameters of the transformer layers: no embeddings, no vocabulary projection, no heads."""
    bert = model.bert if hasattr(model, "bert") else model
    return sum(p.numel() for p in bert.encoder.parameters())


def flops_per_token(model: torch.nn.Module, mean_length: float, training: bool) -> float:
    """6N (training) or 2N (inference) plus attention: QK^T and AV, 2 x 2 x layers x length x hidden forward."""
    config = model.config
    attention = 4 * config.num_hidden_layers * mean_length * config.hidden_size
    n = encoder_parameters(model)
    return 6 * n + 3 * attention if training else 2 * n + attention


# ----------------------------------------------------------------------------------------------
# ceilings


def ceilings(profile) -> dict:
    """Both precisions' ceilings, square and model-shaped; where bf16 is emulated (about 1 GFLOP/s) its
    square product is 512^3, not 2048^3, so that one product does not take half a minute."""
    from sessionbert_core.model.precision import matmul_gflops, native_bf16

    size, native = profile.model, native_bf16("cpu")
    result = {"threads": torch.get_num_threads(), "native_bf16": native}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        square = 2048 if native or dtype == torch.float32 else 512
        result[f"{name}_gflops"] = round(matmul_gflops(dtype, square, square, square, seconds=3.0), 1)
        shaped = matmul_gflops(dtype, 4096, size.hidden_size, size.intermediate_size, seconds=1.0 if native else 0.3)
        result[f"{name}_model_shaped_gflops"] = round(shaped, 1)
    return result


def machine() -> dict:
    """What the figures were measured on: the CPU model and its bf16 instructions, cores, torch."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"cpu": model or "unknown", "cpus": os.cpu_count(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_instructions": [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]}


# ----------------------------------------------------------------------------------------------
# the whole graph, per asset


class RssSampler:
    """Resident memory of a process and its children, sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.2):
        self.process, self.every, self.samples = psutil.Process(pid), every, []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                processes = [self.process, *self.process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in processes if p.is_running())
            except psutil.Error:
                return
            self.samples.append((time.time(), rss))
            time.sleep(self.every)

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Peak RSS in [start, end] and the RSS at start, in MiB."""
        before = [rss for t, rss in self.samples if t <= start] or [self.samples[0][1]]
        inside = [rss for t, rss in self.samples if start <= t <= end] or [before[-1]]  # a step shorter than a sample
        return max(inside) / MIB, before[-1] / MIB


def pipeline(profile_name: str, home: Path) -> dict:
    import shutil

    import dagster as dg

    shutil.rmtree(home, ignore_errors=True)
    env = os.environ | {"SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": profile_name,
                        "DAGSTER_HOME": str(home / "dagster")}
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "sessionbert_assets.cli", "run"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = RssSampler(process.pid)
    output = process.communicate()[0]
    total = time.time() - started
    if process.returncode:
        raise RuntimeError(f"sessionbert run failed:\n{output[-4000:]}")
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        events = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                        dg.DagsterEventType.STEP_SUCCESS})
    starts, assets = {}, {}
    for event in events:
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = event.timestamp
        else:
            start = starts[event.step_key]
            peak, before = sampler.window(start, event.timestamp)
            assets[event.step_key] = {"seconds": round(event.timestamp - start, 1), "peak_rss_mib": round(peak),
                                      "rss_rise_mib": round(peak - before)}
    evaluation = json.loads((home / "model_evaluation.json").read_text())
    peak = max(rss for _, rss in sampler.samples) / MIB
    return {"home": str(home), "seconds": round(total, 1), "peak_rss_mib": round(peak), "assets": assets,
            "quality": {f"{head}/accuracy": evaluation[head]["sessionbert"]["accuracy"]
                        for head in ("service", "page")}}


# ----------------------------------------------------------------------------------------------
# training throughput


class StepClock(TrainerCallback):
    """The time of every optimizer step, with the positions computed and the useful (unpadded) ones so far."""

    def __init__(self):
        self.marks, self.computed, self.useful = [], 0, 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def count(module, args_, kwargs_):
            if module.training:
                mask = kwargs_["attention_mask"]
                self.computed += mask.numel()
                self.useful += int(mask.sum())

        model.register_forward_pre_hook(count, with_kwargs=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), self.computed, self.useful))


def timed_training(home: Path, profile, stage: str, sessions: int, steps_to_skip: int = 3) -> dict:
    """One epoch of `stage` on up to `sessions` training sessions, timed from the end of step
    `steps_to_skip` to the end of the last step (the epoch's one evaluation comes after it), in the
    precision the pipeline resolves (SESSIONBERT_PRECISION, auto by default)."""
    import tempfile

    from transformers import AutoTokenizer

    from sessionbert_core.model.precision import resolve_precision
    from sessionbert_core.model.train import TrainSettings, finetune, pretrain

    splits = pl.read_parquet(home / "session_splits.parquet")
    train, validation = (splits.filter(pl.col("split") == s) for s in ("train", "validation"))
    tokenizer = AutoTokenizer.from_pretrained(home / "tokenizer")
    precision = resolve_precision("cpu")
    settings = replace(TrainSettings.for_stage(profile.training, stage, 0, profile.model.max_length,
                                               bf16=precision.bf16),
                       epochs=1.0, evaluations_per_epoch=1, max_train_sessions=sessions)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as scratch:
        quiet = lambda _: None  # noqa: E731
        if stage == "pretrain":
            model, _ = pretrain(tokenizer, train["text"].to_list(), validation["text"].head(512).to_list(),
                                      profile.model, settings, Path(scratch), quiet, [clock])
        else:
            model, _ = finetune(tokenizer, home / "pretrained_model", train, validation.head(512), settings,
                                      Path(scratch), report=quiet, callbacks=[clock])
    (t0, c0, u0), (t1, c1, u1) = clock.marks[steps_to_skip], clock.marks[-1]
    seconds, useful, computed = t1 - t0, u1 - u0, c1 - c0
    steps = len(clock.marks) - 1 - steps_to_skip
    mean_length = computed / max(steps * settings.batch_size, 1)
    per_token = flops_per_token(model, mean_length, training=True)
    return {"steps": steps, "batch_size": settings.batch_size, "seconds": round(seconds, 2),
            "useful_tokens_per_second": round(useful / seconds), "padding_share": round(1 - useful / computed, 4),
            "mean_padded_length": round(mean_length, 1), "encoder_parameters": encoder_parameters(model),
            "gflops_per_second": round(per_token * useful / seconds / 1e9, 1),
            "dropout": model.config.hidden_dropout_prob, "attention": model.config._attn_implementation,
            "precision": precision.name}


# ----------------------------------------------------------------------------------------------
# inference throughput


def token_lengths(tokenizer, texts: list[str], max_length: int) -> list[int]:
    return [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


def _rate(model, lengths: list[int], seconds: float, units: int) -> dict:
    tokens = sum(lengths)
    per_token = flops_per_token(model, float(np.mean(lengths)), training=False)
    return {"seconds": round(seconds, 2), "per_second": round(units / seconds),
            "useful_tokens_per_second": round(tokens / seconds),
            "gflops_per_second": round(per_token * tokens / seconds / 1e9, 1)}


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def embedding_rates(home: Path, sessions: pl.DataFrame, max_length: int) -> dict:
    """Embedding every session, eager and compiled, each after a warm-up on 2,048 sessions."""
    from sessionbert_core.personas.embed import embed_sessions, load_encoder

    encoder, tokenizer = load_encoder(home / "pretrained_model")
    lengths = token_lengths(tokenizer, sessions["text"].to_list(), max_length)
    result = {}
    for compiled in (False, True):
        warm_up = _timed(lambda: embed_sessions(encoder, tokenizer, sessions.head(2048), max_length=max_length,
                                                compile=compiled))  # noqa: B023 (called at once)
        seconds = _timed(lambda: embed_sessions(encoder, tokenizer, sessions, max_length=max_length,
                                                compile=compiled))  # noqa: B023
        result["embedding_compiled" if compiled else "embedding"] = (
            _rate(encoder, lengths, seconds, sessions.height) | {"warm_up_seconds": round(warm_up, 1)})
    return result


def recommendation_rates(home: Path, sessions: pl.DataFrame, billing: pl.DataFrame, max_length: int) -> dict:
    """Recommending for every user, eager and compiled, each after a warm-up on 200 users."""
    from transformers import AutoTokenizer

    from sessionbert_core.data.serialize import recent_sessions
    from sessionbert_core.model.inputs import recommendation_inputs
    from sessionbert_core.model.networks import load_next_activity_model
    from sessionbert_core.recommend.ranking import RECENT_SESSIONS, recommend_services, sessionbert_predictor

    model = load_next_activity_model(home / "finetuned_model")
    tokenizer = AutoTokenizer.from_pretrained(home / "finetuned_model")
    inputs = recommendation_inputs(recent_sessions(sessions, RECENT_SESSIONS))["input_text"].to_list()
    lengths = token_lengths(tokenizer, inputs, max_length)
    few = sessions.filter(pl.col("user_id").is_in(sessions["user_id"].unique(maintain_order=True).head(200).implode()))
    result = {}
    for compiled in (False, True):
        predictor = sessionbert_predictor(model, tokenizer, max_length, compile=compiled)
        warm_up = _timed(lambda: recommend_services(predictor, few, billing))  # noqa: B023
        started = time.perf_counter()
        table = recommend_services(predictor, sessions, billing)
        result["recommendation_compiled" if compiled else "recommendation"] = (
            _rate(model, lengths, time.perf_counter() - started, sessions["user_id"].n_unique())
            | {"warm_up_seconds": round(warm_up, 1), "sessions_predicted": len(inputs), "rows": table.height})
    return result


def inference(home: Path, profile) -> dict:
    """Embedding every session and recommending for every user, eager and compiled (warm-up apart)."""
    sessions = pl.read_parquet(home / "session_splits.parquet")
    billing = pl.read_parquet(home / "billing_records.parquet")
    result = {"sessions": sessions.height, "users": sessions["user_id"].n_unique(),
              **embedding_rates(home, sessions, profile.model.max_length),
              **recommendation_rates(home, sessions, billing, profile.model.max_length)}
    eager, compiled = result["embedding"], result["embedding_compiled"]
    saved_per_session = 1 / eager["per_second"] - 1 / compiled["per_second"]
    result["compile_pays_above_sessions"] = (round(compiled["warm_up_seconds"] / saved_per_session)
                                             if saved_per_session > 0 else None)
    return result


# ----------------------------------------------------------------------------------------------
# scaling: each stage in its own process, for its own peak memory


def world_at(work: Path, profile, scale: int, seed: int = 0) -> Path:
    from sessionbert_core.world.simulate import generate_world

    size = replace(profile.world, n_users=profile.world.n_users * scale)
    return generate_world(work / f"world-x{scale}", size, seed).landing


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


REPEATS = 3  # the stages of a few seconds: the median of this many runs (one run varies by 30% here)


def _median_time(work):
    """Median seconds of REPEATS runs of `work()`, and its last result."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), result


def _ingest_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    from sessionbert_core import storage
    from sessionbert_core.data.combine import ingest_landing

    landing = world_at(work, profile, scale)
    held = rss_mib()
    seconds, ingested = _median_time(lambda: ingest_landing(landing, b"benchmark-key"))
    storage.write_parquet(ingested.events, data / "events.parquet")
    storage.write_parquet(ingested.billing, data / "billing.parquet")
    return held, seconds, ingested.events.height, ingested.events.estimated_size()


def _serialize_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    from sessionbert_core import storage
    from sessionbert_core.data.serialize import serialize_sessions, split_sessions

    events, billing = pl.read_parquet(data / "events.parquet"), pl.read_parquet(data / "billing.parquet")
    held = rss_mib()
    seconds, sessions = _median_time(lambda: split_sessions(serialize_sessions(events, billing)))
    storage.write_parquet(sessions, data / "sessions.parquet")
    return held, seconds, sessions.height, sessions.estimated_size()


def _train_epoch_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    """Tokenizing the epoch's sessions, timed, plus their tokens at the training section's measured rate."""
    from transformers import AutoTokenizer

    train = pl.read_parquet(data / "sessions.parquet").filter(pl.col("split") == "train")
    tokenizer = AutoTokenizer.from_pretrained(graph / "tokenizer")
    held = rss_mib()
    started = time.perf_counter()
    tokens = sum(token_lengths(tokenizer, train["text"].to_list(), profile.model.max_length))
    rate = json.loads((work / "training.json").read_text())["pretrain"]["useful_tokens_per_second"]
    return held, time.perf_counter() - started + tokens / rate, train.height, 0


def _embed_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    from sessionbert_core import storage
    from sessionbert_core.personas.embed import embed_sessions, load_encoder

    sessions = pl.read_parquet(data / "sessions.parquet")
    encoder, tokenizer = load_encoder(graph / "pretrained_model")
    held = rss_mib()
    started = time.perf_counter()
    embeddings = embed_sessions(encoder, tokenizer, sessions, max_length=profile.model.max_length)
    seconds = time.perf_counter() - started
    storage.write_parquet(embeddings, data / "embeddings.parquet")
    return held, seconds, embeddings.height, embeddings.estimated_size()


def _cluster_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    from sessionbert_core.personas.embed import user_vectors
    from sessionbert_core.personas.segment import K_RANGE, CosineKMeans, choose_k, silhouette_sweep

    embeddings = pl.read_parquet(data / "embeddings.parquet")
    held = rss_mib()
    started = time.perf_counter()
    users, vectors = user_vectors(embeddings, 20)
    k = choose_k(silhouette_sweep(vectors, K_RANGE, 2000, 0))
    clusters = CosineKMeans(k).fit(vectors).labels_
    return held, time.perf_counter() - started, len(users), clusters.nbytes


def _recommend_stage(work: Path, data: Path, scale: int, graph: Path, profile) -> tuple:
    from transformers import AutoTokenizer

    from sessionbert_core.model.networks import load_next_activity_model
    from sessionbert_core.recommend.ranking import recommend_services, sessionbert_predictor

    sessions = pl.read_parquet(data / "sessions.parquet")
    billing = pl.read_parquet(data / "billing.parquet")
    model = load_next_activity_model(graph / "finetuned_model")
    predictor = sessionbert_predictor(model, AutoTokenizer.from_pretrained(graph / "finetuned_model"),
                                      profile.model.max_length)
    held = rss_mib()
    started = time.perf_counter()
    table = recommend_services(predictor, sessions, billing)
    return held, time.perf_counter() - started, sessions["user_id"].n_unique(), table.estimated_size()


# scaling stage -> its run: (memory held before computing, seconds, rows, output bytes)
STAGE_RUNS = {"ingest": _ingest_stage, "serialize": _serialize_stage, "train_epoch": _train_epoch_stage,
              "embed": _embed_stage, "cluster": _cluster_stage, "recommend": _recommend_stage}
STAGES = tuple(STAGE_RUNS)


def stage(name: str, work: Path, scale: int, graph: Path, profile) -> dict:
    """Run one scaling stage here; returns seconds, peak memory and the memory held before computing.

    Peak memory is sampled (every 20 ms) rather than read from ru_maxrss, which a process inherits
    across exec from the one that started it."""
    if name not in STAGE_RUNS:
        raise ValueError(f"unknown stage {name!r}: one of {', '.join(STAGES)}")
    sampler = RssSampler(os.getpid(), every=0.02)
    data = work / f"x{scale}"
    data.mkdir(parents=True, exist_ok=True)
    held, seconds, rows, output_bytes = STAGE_RUNS[name](work, data, scale, graph, profile)
    peak = max(max(rss for _, rss in sampler.samples) / MIB, rss_mib())
    return {"seconds": round(seconds, 2), "rows": rows, "peak_rss_mib": round(peak),
            "held_before_mib": round(held), "output_mib": round(output_bytes / MIB, 1),
            "working_mib": round(max(peak - held - output_bytes / MIB, 0))}


def scaling(profile_name: str, work: Path, graph: Path, scales: list[int]) -> dict:
    results: dict[str, dict] = {s: {} for s in STAGES}
    for scale in scales:
        for name in STAGES:
            done = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--profile", profile_name, "--stage", name,
                                   "--scale", str(scale), "--work", str(work.parent), "--graph", str(graph)],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise RuntimeError(f"stage {name} at {scale}x failed:\n{done.stderr[-3000:]}")
            results[name][f"x{scale}"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  scaling {name:<12} x{scale}: {results[name][f'x{scale}']}", flush=True)
    for by_scale in results.values():
        first, last = by_scale.get(f"x{scales[0]}"), by_scale.get(f"x{scales[-1]}")
        if first and last and first["seconds"] > 0:
            by_scale["time_ratio"] = round(last["seconds"] / first["seconds"], 2)
            by_scale["working_memory_ratio"] = round(max(last["working_mib"], 1) / max(first["working_mib"], 1), 2)
    return results


# ----------------------------------------------------------------------------------------------
# the paper's data scale through the asset graph: each data asset materialized by `sessionbert run --select`


def folder_mib(*paths: Path) -> float:
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return sum(p.stat().st_size for p in files) / MIB


# asset -> what it writes under the home, in the order they run
PAPER_STAGE_OUTPUTS = {"landing_folder": ("worlds",), "landing_files": ("ingest_cache",),
                       "raw_sessions": ("raw_sessions.parquet", "billing_records.parquet",
                                        ".raw_sessions.parquet.ledger"),
                       "quarantined_events": ("quarantined_events.parquet",),
                       "session_splits": ("session_splits.parquet",)}
PAPER_STAGES = tuple(PAPER_STAGE_OUTPUTS)
DAY_STAGES = ("raw_sessions", "session_splits")  # partitioned by day: one more day runs only that day


def paper_stage(name: str, home: Path, profile_name: str, days: str | None = None) -> dict:
    """One data asset materialized in a child process (`sessionbert run --select NAME [--days DAYS]`, the CLI that
    `make run` runs): its seconds, the child's peak resident memory (sampled every 0.1 s) and the MiB it wrote."""
    env = {**os.environ, "SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": profile_name,
           "SESSIONBERT_SOURCE": "synthetic"}
    started = time.perf_counter()
    command = [sys.executable, "-m", "sessionbert_assets.cli", "run", "--select", name]
    child = subprocess.Popen(command + (["--days", days] if days else []), env=env,
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = RssSampler(child.pid, every=0.1)
    output, _ = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(f"sessionbert run --select {name} failed:\n{output[-3000:]}")
    written = [home / out for out in PAPER_STAGE_OUTPUTS[name] if (home / out).exists()]
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(max(rss for _, rss in sampler.samples) / MIB),
            "output_mib": round(folder_mib(*written))}


def _paper_counts(home: Path) -> dict:
    """What the data assets hold at the end, counted from their tables."""
    from sessionbert_core import storage

    def rows(name: str) -> int:
        return storage.scan_table(home / f"{name}.parquet").select(pl.len()).collect().item()

    sessions = storage.scan_table(home / "session_splits.parquet")
    return {"page_views": rows("raw_sessions"), "billing_rows": rows("billing_records"),
            "quarantined": rows("quarantined_events"), "sessions": rows("session_splits"),
            "users": sessions.select(pl.col("user_id").n_unique()).collect().item(),
            "raw_sessions_days": len(storage.day_paths(home / "raw_sessions.parquet"))}


def paper_data(profile_name: str, work: Path) -> dict:
    """The data assets of `profile_name` (the paper's, by default), one after the other in a home under `work`
    kept between runs: the world is generated once (landing_folder regenerates only what changed). Then the
    same again after one new day lands in a file of its own (`one_more_day`)."""
    home = work / f"paper-home-{profile_name}"
    results = {"profile": profile_name}
    for name in PAPER_STAGES:
        results[name] = paper_stage(name, home, profile_name)
        print(f"  paper data {name:<15} {results[name]}", flush=True)
    results["counts"] = _paper_counts(home)
    results["one_more_day"] = one_more_day(home, profile_name)
    return results


NEW_FILE = "events-one-more-day.parquet"


def one_more_day(home: Path, profile_name: str) -> dict:
    """The data assets again after the next day lands in a file of its own (the world's last day of page views
    again, a day later, as new sessions of the same users: what the next day's export adds). The new file is
    the one parse, and the assets by day run that day alone (`--days`, what the new-days sensor asks for);
    the quarantine counts every file again. The file and its day are removed afterwards, so the home stays
    the profile's world."""
    from sessionbert_core import storage
    from sessionbert_core.world.truth import WorldPaths

    landing = WorldPaths(home / "worlds" / f"{profile_name}-seed0").landing
    events = pl.concat([pl.scan_parquet(path).filter(pl.col("timestamp").dt.date() == pl.col("timestamp").max()
                                                      .dt.date()) for path in sorted(landing.glob("events-*.parquet"))]
                       ).collect()
    last = events["timestamp"].max().date()
    events = events.filter(pl.col("timestamp").dt.date() == last)
    events.with_columns(pl.col("timestamp") + timedelta(days=1), session_id=pl.col("session_id") + "-next"
                        ).write_parquet(landing / NEW_FILE)
    day = (last + timedelta(days=1)).isoformat()
    results = {"rows": events.height, "day": day}
    try:
        for name in PAPER_STAGES:
            results[name] = paper_stage(name, home, profile_name, day if name in DAY_STAGES else None)
            print(f"  one more day {name:<15} {results[name]}", flush=True)
    finally:
        (landing / NEW_FILE).unlink(missing_ok=True)
        for table in ("raw_sessions", "billing_records", "session_splits"):
            (home / f"{table}.parquet" / f"{day}.parquet").unlink(missing_ok=True)
        storage.remove_folder(home / ".raw_sessions.parquet.ledger" / day)
    return results


# ----------------------------------------------------------------------------------------------
# report


def _in_use(result: dict) -> tuple[str, float | None]:
    used = result.get("precision", {}).get("precision", "bf16")
    return used, result.get("ceilings", {}).get(f"{used}_gflops")


def _mfu(result: dict, gflops: float) -> str:
    used, ceiling = _in_use(result)
    return f"{gflops / ceiling:.0%} of {used}" if ceiling else "-"


def _machine_rows(result: dict, m: dict) -> list[tuple]:
    return [("machine", m.get("cpu", "?"), f"{m.get('cpus')} cores",
             f"bf16 instructions: {', '.join(m.get('bf16_instructions', [])) or 'none'}")]


def _precision_rows(result: dict, p: dict) -> list[tuple]:
    return [("precision", f"{_in_use(result)[0]} ({p.get('precision_requested')})", p.get("precision_reason", ""), "")]


def _ceiling_rows(result: dict, c: dict) -> list[tuple]:
    used = _in_use(result)[0]
    return [row for name in ("bf16", "fp32") for row in (
        ("ceiling", f"{name} square product", f"{c[f'{name}_gflops']:.0f} GFLOP/s", "in use" if name == used else ""),
        ("ceiling", f"{name}, model-shaped product", f"{c[f'{name}_model_shaped_gflops']:.0f} GFLOP/s", ""))]


def _training_rows(result: dict, training: dict) -> list[tuple]:
    return [("training", f"{name} (batch {t['batch_size']}, {t['steps']} steps)",
             f"{t['useful_tokens_per_second']:,} useful tokens/s",
             f"MFU {_mfu(result, t['gflops_per_second'])}, padding {t['padding_share']:.1%}")
            for name, t in training.items()]


def _inference_rows(result: dict, i: dict) -> list[tuple]:
    units = (("embedding", "sessions"), ("embedding_compiled", "sessions"), ("recommendation", "users"),
             ("recommendation_compiled", "users"))
    return [("inference", f"{key.replace('_', ', ')} ({i[unit]:,} {unit})", f"{i[key]['per_second']:,} {unit}/s",
             f"MFU {_mfu(result, i[key]['gflops_per_second'])}, warm-up {i[key]['warm_up_seconds']} s")
            for key, unit in units]


def _pipeline_rows(result: dict, p: dict) -> list[tuple]:
    rows = [("make run", name, f"{a['seconds']:.1f} s", f"peak {a['peak_rss_mib']:,} MiB (+{a['rss_rise_mib']:,})")
            for name, a in p["assets"].items()]
    return [*rows, ("make run", "total", f"{p['seconds']:.1f} s", f"peak {p['peak_rss_mib']:,} MiB")]


def _scaling_rows(result: dict, scaling_: dict) -> list[tuple]:
    return [("scaling", name, ", ".join(f"{k} {v['seconds']:.1f} s / {v['working_mib']} MiB"
                                        for k, v in by_scale.items() if k.startswith("x")),
             f"time x{by_scale.get('time_ratio', '-')}, working memory x{by_scale.get('working_memory_ratio', '-')}")
            for name, by_scale in scaling_.items()]


def _paper_data_rows(result: dict, p: dict) -> list[tuple]:
    counts, more = p.get("counts", {}), p.get("one_more_day", {})
    return [(label, f"{name} ({p.get('profile')}: {counts.get('sessions', 0):,} sessions)",
             f"{run[name]['seconds']:.0f} s",
             f"peak {run[name]['peak_rss_mib']:,} MiB, {run[name]['output_mib']:,} MiB written")
            for label, run in (("paper data", p), ("+ one day", more)) for name in PAPER_STAGES if name in run]


# result key -> its rows in the table, in the table's order
TABLE_ROWS = {"machine": _machine_rows, "precision": _precision_rows, "ceilings": _ceiling_rows,
              "training": _training_rows, "inference": _inference_rows, "pipeline": _pipeline_rows,
              "scaling": _scaling_rows, "paper_data": _paper_data_rows}


def table(result: dict) -> str:
    rows = [row for key, rows_of in TABLE_ROWS.items() if key in result for row in rows_of(result, result[key])]
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def _training_section(args, profile, work: Path, graph: Path, result: dict) -> dict:
    training = {s: timed_training(graph, profile, s, args.train_sessions) for s in ("pretrain", "finetune")}
    (work / "training.json").write_text(json.dumps(training))  # the scaling section's training rate
    return training


def _scaling_section(args, profile, work: Path, graph: Path, result: dict) -> dict:
    if not (work / "training.json").exists():
        (work / "training.json").write_text(json.dumps(result["training"]))
    return scaling(args.profile, work, graph, args.scales)


def _paper_data_section(args, profile, work: Path, graph: Path, result: dict) -> dict:
    return paper_data(args.paper_profile, args.work)


# section -> its run (args, profile, work folder, graph home, the result so far), in the order they run
SECTION_RUNS = {"ceilings": lambda args, profile, *_: ceilings(profile),
                "pipeline": lambda args, profile, work, graph, _: pipeline(args.profile, graph),
                "training": _training_section,
                "inference": lambda args, profile, work, graph, _: inference(graph, profile),
                "scaling": _scaling_section, "paper_data": _paper_data_section}
SECTIONS = tuple(SECTION_RUNS)
DEFAULT_SECTIONS = SECTIONS[:-1]  # paper_data (the paper's 9M sessions) is asked for by name: ~20 min on 2 cores


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--sections", nargs="+", default=list(DEFAULT_SECTIONS), choices=SECTIONS)
    parser.add_argument("--paper-profile", default="paper",
                        help="the profile whose data assets the paper_data section runs (default: paper)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionbert-perf"))
    parser.add_argument("--graph", type=Path, help="a finished graph's SESSIONBERT_HOME (default: the pipeline's)")
    parser.add_argument("--train-sessions", type=int, default=8192, help="sessions per timed training epoch")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one scaling stage, in a child process
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path)
    return parser


def main(argv: list[str] | None = None) -> None:
    from sessionbert_core.config import get_profile
    from sessionbert_core.model.precision import resolve_precision

    args = _parser().parse_args(argv)
    profile = get_profile(args.profile)
    work = args.work / args.profile
    graph = args.graph or work / "graph"
    if args.stage:
        print(json.dumps(stage(args.stage, work, args.scale, graph, profile)))
        return
    output = args.output or RESULTS / f"perf-{args.profile}.json"
    result = json.loads(output.read_text()) if output.exists() else {}
    result |= {"profile": args.profile, "machine": machine(), "precision": resolve_precision("cpu").metadata()}
    work.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    for section in (s for s in SECTIONS if s in args.sections):
        started = time.perf_counter()
        print(f"{section} ...", flush=True)
        result[section] = SECTION_RUNS[section](args, profile, work, graph, result)
        print(f"{section}: {time.perf_counter() - started:.0f} s", flush=True)
        output.write_text(json.dumps(result, indent=2) + "\n")  # kept section by section
    output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nwritten: {output}")


if __name__ == "__main__":
    main()
