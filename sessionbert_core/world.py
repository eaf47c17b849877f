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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from sessionbert_core import storage
from sessionbert_core.config import TIERS, WorldSize
from sessionbert_core.serialize import service_of
from sessionbert_core.world_catalog import (
    EXPENSIVE,
    FREE,
    HUB_ACTIVITIES,
    HUB_WEIGHTS,
    PERSONA_TIERS,
    PERSONAS,
    PLACES,
    SERVICES,
    TASKS,
)

WORLD_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
USERS_PER_CHUNK = 1024
CATALOG_DETAIL = "catalog;<detail>"  # marker for the step that shows one service's catalog page
FOCUS_SHARE = 0.6  # how often a catalog detail visit shows a service the user is about to adopt
LOOKAHEAD_DAYS = 7  # how far ahead catalog browsing anticipates an adoption
ADOPTION_HAZARD = 0.035  # daily chance of taking up a persona task not yet done
STRAY_HAZARD = 0.0004  # daily chance of taking up a task of another persona
OCCASIONAL_RATE = 0.12  # an occasional user's session rate against a regular one's (a few sessions a month)
TIER_COST = {"Low": 1.0, "Medium": 4.0, "High": 15.0, "Very High": 60.0}


@dataclass(frozen=True)
class TaskChain:
    """One task as a cyclic chain: `steps[i]` lists (activity, weight) variants of step i."""

    name: str
    steps: tuple[tuple[tuple[str, float], ...], ...]
    p_repeat: float
    p_skip: float
    p_back: float
    p_detour: float
    mean_extra_length: float

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def transition_matrix(self) -> np.ndarray:
        """States 0..m-1 are steps; state m+i is a hub detour after step i that returns to step i+1."""
        m = self.n_steps
        t = np.zeros((2 * m, 2 * m))
        p_advance = 1.0 - self.p_repeat - self.p_skip - self.p_back - self.p_detour
        for i in range(m):
            t[i, i] += self.p_repeat
            t[i, (i + 1) % m] += p_advance
            t[i, (i + 2) % m] += self.p_skip
            t[i, (i - 1) % m] += self.p_back
            t[i, m + i] += self.p_detour
            t[m + i, (i + 1) % m] += 0.8
            t[m + i, m + i] += 0.2
        return t

    def initial_distribution(self) -> np.ndarray:
        m = self.n_steps
        p = np.zeros(2 * m)
        p[0] = 0.65
        p[m + m - 1] = 0.35  # start on a hub, then step 0
        return p


@dataclass(frozen=True)
class WorldStructure:
    """What every user shares: the activity vocabulary, the task chains and the personas."""

    activities: tuple[str, ...]
    tasks: tuple[TaskChain, ...]
    catalog_detail_weights: tuple[float, ...]  # over `catalog_detail_activities`

    @property
    def activity_index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.activities)}

    @property
    def catalog_detail_activities(self) -> tuple[str, ...]:
        return tuple(f"catalog;{s}" for s in SERVICES if s != "catalog")

    @property
    def task_index(self) -> dict[str, int]:
        return {t.name: i for i, t in enumerate(self.tasks)}

    def task_activities(self, task: TaskChain) -> list[str]:
        acts = []
        for step in task.steps:
            for activity, _ in step:
                acts.append("catalog;*" if activity == CATALOG_DETAIL else activity)
        return list(dict.fromkeys(acts))


def all_activities() -> tuple[str, ...]:
    acts = [f"{service};{page}" for service, (_, pages) in SERVICES.items() for page in pages]
    acts += [f"catalog;{s}" for s in SERVICES if s != "catalog"]
    return tuple(acts)


def build_structure(seed: int) -> WorldStructure:
    rng = np.random.default_rng([seed, 1])
    tasks = []
    for name, services in TASKS.items():
        if name == "explore_new_services":
            steps = (
                (("catalog;home", 1.0),),
                (("catalog;browse", 1.0),),
                ((CATALOG_DETAIL, 1.0),),
                (("console;whats_new", 0.6), ("marketplace;products", 0.4)),
                (("marketplace;subscriptions", 0.5), ("marketplace;private_offers", 0.5)),
            )
        else:
            steps = _random_steps(rng, services)
        p_detour, p_repeat, p_skip, p_back = rng.uniform([0.1, 0.05, 0.05, 0.03], [0.2, 0.12, 0.12, 0.08])
        tasks.append(TaskChain(name, steps, float(p_repeat), float(p_skip), float(p_back), float(p_detour),
                               float(rng.uniform(3.0, 8.0))))
    detail_weights = rng.dirichlet(np.full(len(SERVICES) - 1, 0.7))
    return WorldStructure(all_activities(), tuple(tasks), tuple(float(w) for w in detail_weights))


def _random_steps(rng: np.random.Generator, services: tuple[str, ...]) -> tuple:
    free_pages = {s: list(rng.permutation(SERVICES[s][1])) for s in services}
    service_weights = np.array([0.4] + [0.6 / (len(services) - 1)] * (len(services) - 1))
    steps = []
    for i in range(int(rng.integers(5, 10))):
        available = [s for s in services if free_pages[s]]
        if not available:
            break
        if i == 0 and free_pages[services[0]]:
            service = services[0]
        else:
            w = np.array([service_weights[services.index(s)] for s in available])
            service = available[int(rng.choice(len(available), p=w / w.sum()))]
        n_variants = min(int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])), len(free_pages[service]))
        pages = [free_pages[service].pop() for _ in range(n_variants)]
        weights = rng.dirichlet(np.full(n_variants, 2.0))
        steps.append(tuple((f"{service};{p}", float(w)) for p, w in zip(pages, weights, strict=True)))
    return tuple(steps)


def persona_definitions(structure: WorldStructure) -> dict:
    """The persona definitions YAML content, as user surveys would give it."""
    return {
        "personas": {name: {"tasks": list(tasks)} for name, (_, tasks) in PERSONAS.items()},
        "tasks": {t.name: {"activities": structure.task_activities(t)} for t in structure.tasks},
    }


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
            second_weights = np.array([second.get(t, 0.0) for t in active])
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


# ----------------------------------------------------------------------------------------------
# session walks, vectorized over all sessions of a chunk


@dataclass(frozen=True)
class _ChainTables:
    init_cum: np.ndarray  # (tasks, S)
    trans_cum: np.ndarray  # (tasks, S, S)
    emit_ids: np.ndarray  # (tasks, S, V) activity ids
    emit_cum: np.ndarray  # (tasks, S, V)
    is_detail: np.ndarray  # (tasks, S) the catalog detail step
    next_dist: np.ndarray  # (tasks, S, A): distribution of the next activity from each state
    detail_ids: np.ndarray
    detail_cum: np.ndarray


def _chain_tables(structure: WorldStructure) -> _ChainTables:
    index = structure.activity_index
    n_tasks = len(structure.tasks)
    s_max = 2 * max(t.n_steps for t in structure.tasks)
    v_max = max(len(HUB_ACTIVITIES), 3)
    n_act = len(structure.activities)
    detail_ids = np.array([index[a] for a in structure.catalog_detail_activities])
    detail_p = np.array(structure.catalog_detail_weights)

    init_cum = np.ones((n_tasks, s_max))
    trans_cum = np.ones((n_tasks, s_max, s_max))
    emit_ids = np.zeros((n_tasks, s_max, v_max), dtype=np.int64)
    emit_cum = np.ones((n_tasks, s_max, v_max))
    is_detail = np.zeros((n_tasks, s_max), dtype=bool)
    next_dist = np.zeros((n_tasks, s_max, n_act))
    for k, task in enumerate(structure.tasks):
        m = task.n_steps
        t = task.transition_matrix()
        init_cum[k, : 2 * m] = np.cumsum(task.initial_distribution())
        trans_cum[k, : 2 * m, : 2 * m] = np.cumsum(t, axis=1)
        emission = np.zeros((2 * m, n_act))
        for i, step in enumerate(task.steps):
            if step[0][0] == CATALOG_DETAIL:
                is_detail[k, i] = True
                emission[i, detail_ids] = detail_p
                continue
            ids = [index[a] for a, _ in step]
            w = np.array([w for _, w in step])
            emit_ids[k, i, : len(ids)] = ids
            emit_cum[k, i, : len(ids)] = np.cumsum(w)
            emission[i, ids] = w
        hub_ids = [index[a] for a in HUB_ACTIVITIES]
        for i in range(m, 2 * m):
            emit_ids[k, i, : len(hub_ids)] = hub_ids
            emit_cum[k, i, : len(hub_ids)] = np.cumsum(HUB_WEIGHTS)
            emission[i, hub_ids] = HUB_WEIGHTS
        next_dist[k, : 2 * m] = t @ emission
    return _ChainTables(init_cum, trans_cum, emit_ids, emit_cum, is_detail, next_dist, detail_ids,
                        np.cumsum(detail_p))


def _draw(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    u = rng.random((cum.shape[0], 1))
    return np.minimum((u > cum).sum(axis=1), cum.shape[1] - 1)


def _walk_sessions(tables: _ChainTables, task_ids: np.ndarray, focus_ids: np.ndarray, lengths: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Activity ids (sessions x max length, -1 padded) and the chain state before each last activity."""
    n, l_max = len(task_ids), int(lengths.max(initial=1))
    acts = np.full((n, l_max), -1, dtype=np.int64)
    prev_state = np.zeros(n, dtype=np.int64)
    state = _draw(rng, tables.init_cum[task_ids])
    for pos in range(l_max):
        if pos > 0:
            state = _draw(rng, tables.trans_cum[task_ids, state])
        variant = _draw(rng, tables.emit_cum[task_ids, state])
        act = tables.emit_ids[task_ids, state, variant]
        detail = tables.is_detail[task_ids, state]
        if detail.any():
            popular = tables.detail_ids[_draw(rng, np.broadcast_to(tables.detail_cum, (n, len(tables.detail_cum))))]
            focused = (focus_ids >= 0) & (rng.random(n) < FOCUS_SHARE)
            act = np.where(detail, np.where(focused, focus_ids, popular), act)
        live = pos < lengths
        acts[:, pos] = np.where(live, act, -1)
        prev_state = np.where(pos == lengths - 2, state, prev_state)
    return acts, prev_state


def _ceilings(structure: WorldStructure, tables: _ChainTables, task_ids: np.ndarray, prev_state: np.ndarray,
              focus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bayes-optimal last activity and last service given the true task, chain state and catalog focus."""
    services = [service_of(a) for a in structure.activities]
    service_names = list(dict.fromkeys(services))
    to_service = np.zeros((len(structure.activities), len(service_names)))
    to_service[np.arange(len(services)), [service_names.index(s) for s in services]] = 1.0
    dist = tables.next_dist[task_ids, prev_state]  # (n, A)
    best_service = np.array(service_names)[(dist @ to_service).argmax(axis=1)]
    focused = np.flatnonzero(focus_ids >= 0)
    if len(focused):
        # the detail step shows the focus service with FOCUS_SHARE, the popular pages otherwise
        trans = tables.trans_cum[task_ids[focused], prev_state[focused]]
        p_state = np.diff(trans, axis=1, prepend=0.0)
        p_detail = (p_state * tables.is_detail[task_ids[focused]]).sum(axis=1)
        mixed = dist[focused].copy()
        mixed[:, tables.detail_ids] *= 1.0 - FOCUS_SHARE
        mixed[np.arange(len(focused)), focus_ids[focused]] += FOCUS_SHARE * p_detail
        dist = dist.copy()
        dist[focused] = mixed
    best_page = np.array(structure.activities)[dist.argmax(axis=1)]
    return best_page, best_service


# ----------------------------------------------------------------------------------------------
# the whole world, written as a landing folder plus ground truth


@dataclass(frozen=True)
class WorldPaths:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def personas_yaml(self) -> Path:
        return self.root / "personas.yaml"

    @property
    def catalog_json(self) -> Path:
        return self.root / "service_catalog.json"

    @property
    def manifest(self) -> Path:
        return self.root / "world.json"


def generate_world(root: Path, size: WorldSize, seed: int) -> WorldPaths:
    """Write the world to `root` (atomically: a half-written world is never visible) and return its paths."""
    root = Path(root)
    manifest = {"seed": seed, "size": asdict(size), "version": 2}
    paths = WorldPaths(root)
    if paths.manifest.exists() and json.loads(paths.manifest.read_text()).get("config") == manifest:
        return paths
    staging = WorldPaths(storage.staging_folder(root))
    structure = build_structure(seed)
    tables = _chain_tables(structure)
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


def _chunk_events(structure: WorldStructure, tables: _ChainTables, part: _Chunk,
                  rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    sessions = part.sessions
    task_ids = sessions["task"].replace_strict(structure.task_index, return_dtype=pl.Int64).to_numpy()
    index = structure.activity_index
    focus_ids = np.array([index[f"catalog;{f}"] if f else -1 for f in sessions["focus_service"].to_list()],
                         dtype=np.int64)
    lengths = sessions["length"].to_numpy()
    acts, prev_state = _walk_sessions(tables, task_ids, focus_ids, lengths, rng)
    best_page, best_service = _ceilings(structure, tables, task_ids, prev_state, focus_ids)

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


# ----------------------------------------------------------------------------------------------
# reading the ground truth back


def load_truth(root: Path, name: str) -> pl.DataFrame:
    """One ground-truth table: users, sessions, user_tasks or first_use."""
    path = WorldPaths(Path(root)).truth / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no ground truth table {name!r} at {path}")
    return pl.read_parquet(path)


def adoption_probabilities(root: Path, cutoff_day: int | pl.DataFrame, horizon_days: int | None = None) -> pl.DataFrame:
    """Each user's true probability of first using each service in the days after a cutoff.

    `cutoff_day` is one world day (calendar, from the world's start) for everyone, with
    `horizon_days`, or a frame `user_id, cutoff_day, horizon_days` with a cutoff per user. (The
    Hit@k protocol's `seen_days` count a user's active days; this is the day after the last seen.)
    A service is adopted when a task containing it is taken up; a task still to be taken up after
    the cutoff is taken up within the horizon with 1 - (1 - hazard) ** horizon. Tasks already taken
    up whose services are still unused will be used with certainty.
    """
    tasks = load_truth(root, "user_tasks")
    first_use = load_truth(root, "first_use")
    if isinstance(cutoff_day, int):
        cutoffs = tasks.select("user_id").unique().with_columns(cutoff_day=pl.lit(cutoff_day),
                                                                 horizon_days=pl.lit(horizon_days))
    else:
        cutoffs = cutoff_day.select("user_id", "cutoff_day", "horizon_days")
    cutoffs = cutoffs.cast({"cutoff_day": pl.Int32, "horizon_days": pl.Int32})
    used = (first_use.join(cutoffs, on="user_id")
            .filter(pl.col("first_use_day") < pl.col("cutoff_day")).select("user_id", "service"))
    p_task = (
        tasks.join(cutoffs, on="user_id")
        .with_columns(
            p=pl.when(pl.col("enabled_day").is_not_null() & (pl.col("enabled_day") < pl.col("cutoff_day")))
            .then(1.0)
            .otherwise(1.0 - (1.0 - pl.col("daily_hazard")) ** pl.col("horizon_days")),
            service=pl.col("task").replace_strict({t: list(s) for t, s in TASKS.items()},
                                                   return_dtype=pl.List(pl.String)),
        )
        .explode("service")
    )
    return (
        p_task.group_by("user_id", "service")
        .agg(probability=1.0 - (1.0 - pl.col("p")).product())
        .join(used, on=["user_id", "service"], how="anti")
        .sort("user_id", pl.col("probability"), descending=[False, True])
    )


def world_day(date: pl.Expr) -> pl.Expr:
    """The world's day number (0 = its first day) of a date expression."""
    return (date - pl.lit(WORLD_START.date())).dt.total_days().cast(pl.Int32)


def adoption_oracle(root: Path):
    """For the Hit@k protocol: per-user cutoffs (`user_id, last_seen_day`) -> true adoption probabilities.

    The horizon runs from the day after the user's last seen day to the end of the world's window.
    """
    n_days = json.loads(WorldPaths(Path(root)).manifest.read_text())["config"]["size"]["n_days"]

    def probabilities(cutoffs: pl.DataFrame) -> pl.DataFrame:
        frame = cutoffs.select("user_id", cutoff_day=world_day(pl.col("last_seen_day")) + 1).with_columns(
            horizon_days=pl.lit(n_days) - pl.col("cutoff_day"))
        return adoption_probabilities(root, frame)

    return probabilities


def used_before(root: Path) -> pl.DataFrame:
    """`user_id, service`: what each user had used before the world's window began."""
    return load_truth(root, "first_use").filter(pl.col("first_use_day") < 0).select("user_id", "service")
