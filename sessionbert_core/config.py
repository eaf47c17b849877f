"""Settings from the environment and the size profiles (tiny, small, paper)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TIERS = ("Low", "Medium", "High", "Very High")


@dataclass(frozen=True)
class WorldSize:
    """How big the synthetic world is (users, days, mean sessions per user-day) and how it looks.

    The defaults are the regular world of the paper: every user active most weeks under one persona.
    The other settings give what real logs show: users who come a few times a month, users who work
    under a second persona part of the time, short sessions, and (with `n_days=1`) a one-day site.
    """

    n_users: int
    n_days: int
    sessions_per_day: float
    occasional_share: float = 0.0  # users who come OCCASIONAL_RATE times as often as the others
    second_persona_share: float = 0.0  # share of each user's sessions done as a second persona would
    session_length_scale: float = 1.0  # scales the pages a session has beyond its first three


@dataclass(frozen=True)
class ModelSize:
    """The BERT encoder's shape."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_length: int
    # dropout of hidden states and attention; 0 where the data is large next to the model (dropout's random
    # masks took 21% of a CPU training step, and quality held without it: benchmarks/NOTES.md)
    dropout: float = 0.1


def encoder_candidates(largest: ModelSize, data_is_small: bool) -> dict[str, ModelSize]:
    """The encoders pretraining compares by validation loss: the profile's (its largest), and where
    the data is smaller than the profile was sized for (epochs repeat to reach its steps), one of half
    its width and depth, which may generalize better from little data."""
    candidates = {f"{largest.hidden_size}x{largest.num_layers}": largest}
    if data_is_small and largest.hidden_size >= 64 and largest.num_layers >= 2:
        half = replace(largest, hidden_size=largest.hidden_size // 2, num_layers=largest.num_layers // 2,
                       num_heads=max(1, largest.num_heads // 2), intermediate_size=largest.intermediate_size // 2)
        candidates[f"{half.hidden_size}x{half.num_layers}"] = half
    return candidates


@dataclass(frozen=True)
class TrainingPlan:
    """How long and how fast each training stage runs at a profile (the paper: 3 epochs)."""

    pretrain_epochs: float
    finetune_epochs: float
    pretrain_learning_rate: float
    finetune_learning_rate: float
    batch_size: int
    finetune_every_cut: bool = False  # every activity of a training session as a target, not only the last
    # validations (two per epoch) without a better loss before stopping; MLM loss first sits on a plateau
    # (unigram frequencies) for some hundred steps, which early stopping must not mistake for the end
    patience: int = 3
    validation_sessions: int | None = 2048  # scored at each evaluation during training (None: all of them)
    # optimizer steps each stage runs at least, repeating epochs on small data (early stopping still ends
    # it, and the schedule spans the steps actually planned): 3 epochs of a one-day log are some 50 steps,
    # after which the model knows only the unigram prior
    min_steps: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    world: WorldSize
    model: ModelSize
    training: TrainingPlan
    # users whose sessions the general-language encoder embeds for the silhouette comparison (paper Figure 2):
    # 22M parameters over ~110 tokens a session, the costliest inference of the graph (2.5 min of a fp32 run
    # on 2 cores for 300 users)
    baseline_users: int = 150


PROFILES: dict[str, Profile] = {
    # seconds: the test suite (a tiny world needs many passes to get past the MLM plateau)
    "tiny": Profile("tiny", WorldSize(n_users=80, n_days=45, sessions_per_day=0.6),
                    ModelSize(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_length=128,
                              dropout=0.0),
                    TrainingPlan(24, 3, 2e-3, 1e-3, 16, finetune_every_cut=True, patience=8), baseline_users=20),
    # minutes on 2 CPU cores: the default main job (about 50k sessions)
    "small": Profile("small", WorldSize(n_users=1500, n_days=60, sessions_per_day=0.7),
                     ModelSize(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_length=128,
                               dropout=0.0),
                     TrainingPlan(3, 3, 5e-4, 5e-4, 64, min_steps=1500)),
    # the paper's scale: about 9 million sessions, BERT-base, sequences of 512
    "paper": Profile("paper", WorldSize(n_users=200_000, n_days=60, sessions_per_day=0.75),
                     ModelSize(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_length=512),
                     TrainingPlan(3, 3, 1e-4, 5e-5, 32), baseline_users=2000),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


# the default first day partition: the earliest day a page view may have (validate.EARLIEST), so any data fits;
# SESSIONBERT_FIRST_DAY narrows what the UI lists to the days a deployment has
FIRST_DAY = "1990-01-01"


@dataclass(frozen=True)
class Settings:
    """The environment variables of docs/configuration.md, resolved to values. This module is the one that reads
    the environment (and, for `sessionbert serve` and the Dagster instance, writes it)."""

    home: Path
    source: str
    profile: str
    personas: str | None
    seed: int
    pseudonym_key: str = ""  # SESSIONBERT_PSEUDONYM_KEY ("": a random key kept under the home)
    launcher: str = "in_process"  # SESSIONBERT_LAUNCHER
    num_processes: int = 1  # SESSIONBERT_NUM_PROCESSES
    mlflow_tracking_uri: str = ""  # MLFLOW_TRACKING_URI ("": SQLite under the home)
    dagster_home: str = ""  # DAGSTER_HOME ("": $SESSIONBERT_HOME/dagster)
    engine: str = "polars"  # SESSIONBERT_ENGINE: what sessionizes, serializes and splits (polars or spark)
    spark_master: str = "local[*]"  # SESSIONBERT_SPARK_MASTER: the Spark master (sc://host:15002 is Spark Connect)
    java_home: str = ""  # JAVA_HOME, the Java runtime Spark runs on ("": the java on PATH)
    first_day: str = FIRST_DAY  # SESSIONBERT_FIRST_DAY: the first day partition (ISO date) of the tables by day


def default_home(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("SESSIONBERT_HOME") or PROJECT_ROOT / ".sessionbert").resolve()


@dataclass(frozen=True)
class ComputeSettings:
    """Where and in what precision models run: SESSIONBERT_DEVICE and SESSIONBERT_PRECISION."""

    device: str = "auto"
    precision: str = "auto"


def onednn_isa_cap(env: dict[str, str] | None = None) -> str:
    """ONEDNN_MAX_CPU_ISA, the cap a machine puts on oneDNN's instructions (`ALL` when none): what the hardware may
    do for PyTorch, read here as every variable is (`model.precision` decides bf16 by it)."""
    env = os.environ if env is None else env
    return (env.get("ONEDNN_MAX_CPU_ISA") or "ALL").strip().upper()


def compute_from_env(env: dict[str, str] | None = None) -> ComputeSettings:
    env = os.environ if env is None else env
    return ComputeSettings(device=env.get("SESSIONBERT_DEVICE") or "auto",
                           precision=env.get("SESSIONBERT_PRECISION") or "auto")


@dataclass(frozen=True)
class ReadLimits:
    """How much of one landing file is read (SESSIONBERT_MAX_FILE_BYTES, SESSIONBERT_MAX_LINE_BYTES): bytes
    per file once decompressed, and per line. Past the first the file keeps what came before and gets a
    quarantine row of kind `file`; a line past the second is quarantined alone. The paper's files are some
    170 MB each."""

    file_bytes: int = 1 << 30
    line_bytes: int = 1 << 20


def read_limits_from_env(env: dict[str, str] | None = None) -> ReadLimits:
    env = os.environ if env is None else env
    return ReadLimits(_size(env, "SESSIONBERT_MAX_FILE_BYTES", ReadLimits.file_bytes),
                      _size(env, "SESSIONBERT_MAX_LINE_BYTES", ReadLimits.line_bytes))


def _size(env, name: str, default: int) -> int:
    """A size in bytes: a whole number, or one with a KiB, MiB or GiB unit (`512MiB`, `2GiB`)."""
    value = (env.get(name) or "").strip()
    if not value:
        return default
    found = re.fullmatch(r"(\d+)\s*(?:([KMG])i?B?)?", value, re.IGNORECASE)
    if not found or int(found[1]) == 0:
        raise ValueError(f"{name} must be a positive number of bytes such as 1073741824, 512MiB or 2GiB, "
                         f"not {value!r}")
    return int(found[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[(found[2] or "").upper()]


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """The data settings (device and precision: `compute_from_env`)."""
    env = dict(os.environ if env is None else env)
    profile = env.get("SESSIONBERT_PROFILE") or "small"
    get_profile(profile)
    return Settings(
        home=default_home(env),
        source=env.get("SESSIONBERT_SOURCE") or "synthetic",
        profile=profile,
        personas=env.get("SESSIONBERT_PERSONAS") or None,
        seed=int(env.get("SESSIONBERT_SEED") or 0),
        pseudonym_key=env.get("SESSIONBERT_PSEUDONYM_KEY") or "",
        launcher=env.get("SESSIONBERT_LAUNCHER") or "in_process",
        num_processes=int(env.get("SESSIONBERT_NUM_PROCESSES") or 1),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or "",
        dagster_home=env.get("DAGSTER_HOME") or "",
        engine=env.get("SESSIONBERT_ENGINE") or "polars",
        spark_master=env.get("SESSIONBERT_SPARK_MASTER") or "local[*]",
        java_home=env.get("JAVA_HOME") or "",
        first_day=_iso_day(env.get("SESSIONBERT_FIRST_DAY") or FIRST_DAY),
    )


def _iso_day(value: str) -> str:
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise ValueError(f"SESSIONBERT_FIRST_DAY must be an ISO date such as 2024-01-31, not {value!r}") from None


def process_rank(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(this process's rank, the number of processes) under torchrun; (0, 1) when not distributed."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))


SERVE_PREFIX = "SESSIONBERT_SERVE_"  # what `sessionbert serve` hands its uvicorn workers


def serve_settings(env: dict[str, str] | None = None) -> dict[str, str]:
    """The SESSIONBERT_SERVE_* variables, prefix dropped and lower-cased (`max_bytes`, `model`, ...)."""
    env = os.environ if env is None else env
    return {k[len(SERVE_PREFIX):].lower(): v for k, v in env.items() if k.startswith(SERVE_PREFIX) and v}


def export(values: dict[str, str]) -> None:
    """Set environment variables for this process and the ones it starts (uvicorn workers, Dagster)."""
    os.environ.update(values)
