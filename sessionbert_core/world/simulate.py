"""The synthetic cloud console: users with personas doing tasks, their sessions, billing and ground truth.

A session carries out one task. A task is a cyclic chain of steps over a few services' pages; each
step emits one of its page variants, and between steps the user may detour through a console hub
(home, search, ...), repeat a step, skip one or go back. The chain's state is hidden, so a
first-order Markov model on the previous activity cannot tell, after a hub page or a page shared by
several tasks, which task goes on; the ceiling knows the task and the chain state.

Users adopt new tasks of their persona over time (and, rarely, tasks of other personas); the first
session after an adoption carries the new task, which is when its services are first used. Before
adopting, users who explore the catalog look at the detail pages of what they are about to adopt:
the signal a recommender can learn from.

Everything is deterministic given the seed: the structure (task chains) from one stream, users in
fixed-size chunks from streams of their own, so any chunk can be regenerated alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from sessionbert_core import storage
from sessionbert_core.activity import service_of
from sessionbert_core.config import TIERS, WorldSize
from sessionbert_core.world.catalog import (
    EXPENSIVE,
    FREE,
    HUB_ACTIVITIES,
    PERSONA_TIERS,
    PERSONAS,
    PLACES,
    SERVICES,
    TASKS,
)
from sessionbert_core.world.structure import (
    WORLD_START,
    ChainTables,
    WorldStructure,
    best_predictions,
    build_structure,
    chain_tables,
    persona_definitions,
    walk_sessions,
)
from sessionbert_core.world.truth import WorldPaths

USERS_PER_CHUNK = 1024
LOOKAHEAD_DAYS = 7  # how far ahead catalog browsing anticipates an adoption
ADOPTION_HAZARD = 0.035  # daily chance of taking up a persona task not yet done
STRAY_HAZARD = 0.0004  # daily chance of taking up a task of another persona
OCCASIONAL_RATE = 0.12  # an occasional user's session rate against a regular one's (a few sessions a month)
TIER_COST = {"Low": 1.0, "Medium": 4.0, "High": 15.0, "Very High": 60.0}


# ----------------------------------------------------------------------------------------------
# users and sessions


@dataclass
class _Chunk:
    users: pl.DataFrame
    user_tasks: pl.DataFrame
    sessions: pl.DataFrame  # one row per session with its task, length, focus and start time
    billing: pl.DataFrame


def _simulate_users(structure: WorldStructure, size: WorldSize, seed: int, chunk: int) -> _Chunk:
    rng = np.random.default_rng([seed, 2, chunk])
    first = chunk * USERS_PER_CHUNK
    n = min(USERS_PER_CHUNK, size.n_users - first)
    persona_names = list(PERSONAS)
    persona_of = rng.choice(len(persona_names), size=n, p=[PERSONAS[p][0] for p in persona_names])
    task_names = [t.name for t in structure.tasks]
    extra_lengths = {t.name: t.mean_extra_length for t in structure.tasks}
    weekday_factor = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.35])

    users, user_tasks, sessions, billing = [], [], [], []
    for k in range(n):
        user_id = f"u{first + k:07d}"
        persona = persona_names[persona_of[k]]
        task_weights = PERSONAS[persona][1]
        place = PLACES[int(rng.choice(len(PLACES), p=[w for _, w, _ in PLACES]))]
        city = place[2][int(rng.integers(len(place[2])))]
        tier = TIERS[int(rng.choice(4, p=PERSONA_TIERS[persona]))]
        rate = float(rng.gamma(2.0, size.sessions_per_day / 2.0))
        hour = float(rng.uniform(6.0, 18.0))
        # the settings below draw from the stream only where set, so the default world stays as it was
        if size.occasional_share and rng.random() < size.occasional_share:
            rate *= OCCASIONAL_RATE
        second: dict[str, float] = {}
        if size.second_persona_share:
            others = [p for p in persona_names if p != persona]
            second = PERSONAS[others[int(rng.integers(len(others)))]][1]

        # when each task is taken up: -1 = before the window, None = not within it
        main_task = max(task_weights, key=task_weights.get)
        enabled: dict[str, int | None] = {}
        hazards: dict[str, float] = {}
        for task in task_names:
            if task in task_weights or task in second:
                hazards[task] = ADOPTION_HAZARD * float(np.exp(rng.normal(0.0, 0.4)))
                initially = task == main_task or rng.random() < 0.45
            else:
                hazards[task] = STRAY_HAZARD
                initially = False
            day = -1 if initially else int(rng.geometric(hazards[task])) - 1
            enabled[task] = day if day < size.n_days else None
            user_tasks.append((user_id, task, enabled[task], hazards[task]))
        n_extra = int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))
        extras = set(rng.choice(list(SERVICES), size=n_extra, replace=False).tolist()) - {"console", "catalog"}
        users.append((user_id, persona, place[0], city, tier, rate, sorted(extras)))

        used_services = set(extras)
        for task, day in enabled.items():
            if day == -1:
                used_services.update(TASKS[task])
        pending: list[str] = []
        for day in range(size.n_days):
            new_today = sorted(t for t, d in enabled.items() if d == day)
            pending.extend(new_today)
            for task in new_today:
                used_services.update(TASKS[task])
            active = [t for t, d in enabled.items() if d is not None and d <= day]
            # a stray task keeps a small share of the persona's sessions; the second persona's tasks have their own
            weights = np.array([task_weights.get(t, 0.0 if t in second else 0.15) for t in active])
            second_weights = np.array([second.get(t, 0.0) for t in active]) if second else None
            upcoming = sorted({s for t, d in enabled.items() if d is not None and day < d <= day + LOOKAHEAD_DAYS
                               for s in TASKS[t]} - used_services - {"console", "catalog", "marketplace"})
            n_sessions = int(rng.poisson(rate * weekday_factor[(WORLD_START.weekday() + day) % 7]))
            starts = np.sort(rng.uniform(hour - 3.0, hour + 6.0, size=n_sessions)) if n_sessions else []
            for j in range(n_sessions):
                chosen = weights
                if second and rng.random() < size.second_persona_share and second_weights.sum() > 0:
                    chosen = second_weights
                task = pending.pop(0) if pending else active[int(rng.choice(len(active), p=chosen / chosen.sum()))]
                focus = upcoming[int(rng.integers(len(upcoming)))] if upcoming else None
                length = 3 + int(rng.poisson(extra_lengths[task] * size.session_length_scale))
                start_s = day * 86400 + min(max(starts[j], 0.0), 21.0) * 3600.0 + j * 900.0
                sessions.append((user_id, f"{user_id}-d{day:03d}-{j}", day, task, min(length, 40),
                                 focus if task == "explore_new_services" else None, start_s))
            billing.extend(_bill_day(rng, user_id, day, tier, used_services))
    return _Chunk(
        users=pl.DataFrame(users, schema={"user_id": pl.String, "persona": pl.String, "country": pl.String,
                                          "city": pl.String, "billing_tier": pl.String,
                                          "sessions_per_day": pl.Float64, "services_before_window": pl.List(pl.String)},
                           orient="row"),
        user_tasks=pl.DataFrame(user_tasks, schema={"user_id": pl.String, "task": pl.String,
                                                    "enabled_day": pl.Int32, "daily_hazard": pl.Float64},
                                orient="row"),
        sessions=pl.DataFrame(sessions, schema={"user_id": pl.String, "session_id": pl.String, "day": pl.Int32,
                                                "task": pl.String, "length": pl.Int32, "focus_service": pl.String,
                                                "start_s": pl.Float64}, orient="row"),
        billing=pl.DataFrame(billing, schema={"user_id": pl.String, "date": pl.Date, "service": pl.String,
                                              "cost": pl.Float64}, orient="row"),
    )


def _bill_day(rng: np.random.Generator, user_id: str, day: int, tier: str, used: set[str]) -> list[tuple]:
    billed = sorted(s for s in used if s not in FREE)
    if not billed:
        return []
    keep = rng.random(len(billed)) < 0.8
    costs = TIER_COST[tier] * np.array([EXPENSIVE.get(s, 1.0) for s in billed]) * rng.lognormal(0, 0.35, len(billed))
    date = (WORLD_START + timedelta(days=day)).date()
    return [(user_id, date, s, round(float(c), 2)) for s, c, k in zip(billed, costs, keep, strict=True) if k]


def generate_world(root: Path, size: WorldSize, seed: int) -> WorldPaths:
    """Write the world to `root` (atomically: a half-written world is never visible) and return its paths."""
    root = Path(root)
    manifest = {"seed": seed, "size": asdict(size), "version": 2}
    paths = WorldPaths(root)
    if paths.manifest.exists() and json.loads(paths.manifest.read_text()).get("config") == manifest:
        return paths
    staging = WorldPaths(storage.staging_folder(root))
    structure = build_structure(seed)
    tables = chain_tables(structure)
    staging.landing.mkdir(parents=True)
    staging.truth.mkdir(parents=True)
    totals = {"users": 0, "sessions": 0, "events": 0, "billing_records": 0}
    truth_parts: dict[str, list[pl.DataFrame]] = {"users": [], "sessions": [], "user_tasks": [], "first_use": []}
    n_chunks = -(-size.n_users // USERS_PER_CHUNK)
    for chunk in range(n_chunks):
        part = _simulate_users(structure, size, seed, chunk)
        events, session_truth = _chunk_events(structure, tables, part, np.random.default_rng([seed, 3, chunk]))
        storage.write_parquet(events, staging.landing / f"events-{chunk:05d}.parquet")
        storage.write_parquet(part.billing, staging.landing / f"billing-{chunk:05d}.parquet")
        truth_parts["users"].append(part.users)
        truth_parts["sessions"].append(session_truth)
        truth_parts["user_tasks"].append(part.user_tasks)
        truth_parts["first_use"].append(_first_use(events, part))
        totals["users"] += part.users.height
        totals["sessions"] += part.sessions.height
        totals["events"] += events.height
        totals["billing_records"] += part.billing.height
    for name, frames in truth_parts.items():
        storage.write_parquet(pl.concat(frames), staging.truth / f"{name}.parquet")
    storage.write_text(yaml.safe_dump(persona_definitions(structure), sort_keys=False, width=120),
                       staging.personas_yaml)
    storage.write_json({s: {"description": d, "pages": list(p)} for s, (d, p) in SERVICES.items()},
                       staging.catalog_json)
    storage.write_json({"config": manifest, "totals": totals, "start_date": WORLD_START.date().isoformat(),
                        "n_services": len(SERVICES), "n_activities": len(structure.activities),
                        "n_tasks": len(structure.tasks), "n_personas": len(PERSONAS)}, staging.manifest)
    storage.replace_folder(staging.root, root)
    return paths


def _chunk_events(structure: WorldStructure, tables: ChainTables, part: _Chunk,
                  rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    sessions = part.sessions
    task_ids = sessions["task"].replace_strict(structure.task_index, return_dtype=pl.Int64).to_numpy()
    index = structure.activity_index
    focus_ids = np.array([index[f"catalog;{f}"] if f else -1 for f in sessions["focus_service"].to_list()],
                         dtype=np.int64)
    lengths = sessions["length"].to_numpy()
    acts, prev_state = walk_sessions(tables, task_ids, focus_ids, lengths, rng)
    best_page, best_service = best_predictions(structure, tables, task_ids, prev_state, focus_ids)

    rows = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, dtype=np.int64)
    activity = np.array(structure.activities)[acts[rows, positions]]
    gaps = 5.0 + rng.exponential(40.0, size=len(rows))
    first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], lengths)
    seconds = sessions["start_s"].to_numpy()[rows] + offset
    users = part.users.select("user_id", "country", "city", "billing_tier")
    events = (
        pl.DataFrame({
            "row": rows,
            "timestamp": pl.Series(np.round(seconds * 1e6).astype(np.int64)).cast(pl.Duration("us"))
            + WORLD_START,
            "activity": activity,
        })
        .with_columns(pl.col("activity").str.split_exact(";", 1).struct.rename_fields(["service", "page"]))
        .unnest("activity")
        .join(sessions.select("user_id", "session_id").with_row_index("row"), on="row")
        .join(users, on="user_id", how="left")
        .select("user_id", "session_id", pl.col("timestamp").dt.convert_time_zone("UTC"), "service", "page",
                "country", "city", "billing_tier")
    )
    session_truth = sessions.select(
        "session_id", "user_id", "day", "task", pl.col("length").alias("n_activities"), "focus_service",
        pl.Series("ceiling_service", best_service), pl.Series("ceiling_activity", best_page),
    )
    return events, session_truth


def _first_use(events: pl.DataFrame, part: _Chunk) -> pl.DataFrame:
    """Each user's first-use day of each service: -1 for what they used before the window."""
    seen = (
        events.group_by("user_id", "service")
        .agg(pl.col("timestamp").min())
        .with_columns(first_use_day=((pl.col("timestamp") - WORLD_START).dt.total_days()).cast(pl.Int32))
        .drop("timestamp")
    )
    initial_tasks = part.user_tasks.filter(pl.col("enabled_day") == -1)
    before = (
        initial_tasks.with_columns(service=pl.col("task").replace_strict(
            {t: list(s) for t, s in TASKS.items()}, return_dtype=pl.List(pl.String)))
        .explode("service")
        .select("user_id", "service")
    )
    extras = part.users.select("user_id", service="services_before_window").explode("service").drop_nulls()
    console = part.users.select("user_id", service=pl.lit(service_of(HUB_ACTIVITIES[0])))  # everyone's home
    extras = pl.concat([extras, console])
    before = pl.concat([before, extras]).unique().with_columns(first_use_day=pl.lit(-1, pl.Int32))
    return (
        pl.concat([before, seen])
        .group_by("user_id", "service")
        .agg(pl.col("first_use_day").min())
        .sort("user_id", "service")
    )
