"""The world's structure: task chains over services' pages, and the tables that walk them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from sessionbert_core.activity import service_of
from sessionbert_core.world.catalog import (
    HUB_ACTIVITIES,
    HUB_WEIGHTS,
    PERSONAS,
    SERVICES,
    TASKS,
)

WORLD_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
CATALOG_DETAIL = "catalog;<detail>"  # marker for the step that shows one service's catalog page
FOCUS_SHARE = 0.6  # how often a catalog detail visit shows a service the user is about to adopt


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
# session walks, vectorized over all sessions of a chunk


@dataclass(frozen=True)
class ChainTables:
    init_cum: np.ndarray  # (tasks, S)
    trans_cum: np.ndarray  # (tasks, S, S)
    emit_ids: np.ndarray  # (tasks, S, V) activity ids
    emit_cum: np.ndarray  # (tasks, S, V)
    is_detail: np.ndarray  # (tasks, S) the catalog detail step
    next_dist: np.ndarray  # (tasks, S, A): distribution of the next activity from each state
    detail_ids: np.ndarray
    detail_cum: np.ndarray


def chain_tables(structure: WorldStructure) -> ChainTables:
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
    return ChainTables(init_cum, trans_cum, emit_ids, emit_cum, is_detail, next_dist, detail_ids,
                        np.cumsum(detail_p))


def _draw(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    u = rng.random((cum.shape[0], 1))
    return np.minimum((u > cum).sum(axis=1), cum.shape[1] - 1)


def walk_sessions(tables: ChainTables, task_ids: np.ndarray, focus_ids: np.ndarray, lengths: np.ndarray,
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


def best_predictions(structure: WorldStructure, tables: ChainTables, task_ids: np.ndarray, prev_state: np.ndarray,
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
