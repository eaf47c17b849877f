"""Partitions: the landing folder's files, then the days of the tables built from them.

Days are not known before the files are read (a file may hold many days, a day many files), so reading
is by file: `landing_folder` and the new-data sensor register the files (`landing_files`, one dynamic
partition per file, named by its path in the landing folder), and each partition reads and validates one
file alone. Each parse knows the days its rows fall on, and from there the tables are by day
(`SESSION_DAYS`, a `DailyPartitionsDefinition` from SESSIONBERT_FIRST_DAY): a day of `raw_sessions`
combines that day's rows of every file, a day of `session_splits` serializes it. A run over many files or
days carries Dagster's partition-range tags (`range_tags`), so one run reads many files, or many days, each
still alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg

from sessionbert_core.config import settings_from_env
from sessionbert_core.data.ingest import cached_days, cached_files

LANDING_FILES = dg.DynamicPartitionsDefinition(name="landing_files")
# end_offset=1: today is a partition too, so the day now arriving is ingested as it lands
SESSION_DAYS = dg.DailyPartitionsDefinition(start_date=settings_from_env().first_day, end_offset=1)
DAY_ASSETS = ("raw_sessions", "billing_records", "session_splits", "vocabulary_drift")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def sync(instance: dg.DagsterInstance, names: list[str]) -> list[str]:
    """Register the files present and forget the ones gone; the partitions, in registration order."""
    before, present = registered(instance), set(names)
    for gone in [key for key in before if key not in present]:
        instance.delete_dynamic_partition(LANDING_FILES.name, gone)
    known = set(before)
    added = [name for name in names if name not in known]
    if added:
        instance.add_dynamic_partitions(LANDING_FILES.name, added)
    return [key for key in before if key in present] + added


def range_tags(ordered: list[str], wanted: list[str] | None = None) -> dict[str, str]:
    """The tags of one run over `wanted` (default: every partition), as the range from the first to the last of
    them in `ordered` (the registration order); {} when there is none."""
    wanted_set = set(ordered if wanted is None else wanted)
    positions = [i for i, key in enumerate(ordered) if key in wanted_set]
    if not positions:
        return {}
    return {RANGE_START: ordered[min(positions)], RANGE_END: ordered[max(positions)]}


def registered(instance: dg.DagsterInstance) -> list[str]:
    return instance.get_dynamic_partitions(LANDING_FILES.name)


def day_tags(days: list[date]) -> dict[str, str]:
    """The tags of one run over the days from the first of `days` to the last ({} when there is none).

    Raises ValueError for a day outside `SESSION_DAYS`, with what to set."""
    if not days:
        return {}
    first, last = min(days), max(days)
    start = SESSION_DAYS.start.date()
    if first < start:
        raise ValueError(f"the landing folder holds page views from {first.isoformat()}, before the first day "
                         f"partition {start.isoformat()}: set SESSIONBERT_FIRST_DAY={first.isoformat()} (or earlier)")
    last_key = SESSION_DAYS.get_last_partition_key()
    if last_key is not None and last.isoformat() > last_key:
        raise ValueError(f"the landing folder holds page views of {last.isoformat()}, after today's partition "
                         f"{last_key}: is the machine's clock right?")
    return {RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}


def landing_days(instance: dg.DagsterInstance, cache: Path) -> list[date]:
    """The days of the registered files, as their parses in `cache` found them."""
    return cached_days(cache, set(registered(instance)))


def upstream_needed(selected: list[dg.AssetKey], instance: dg.DagsterInstance, cache: Path,
                    days: tuple[date, date] | None = None) -> list[dg.AssetKey]:
    """What `selected` lacks to run its partitions, in the order it runs: `landing_folder` where it holds a
    partitioned asset and no file is registered (listing the folder registers them), and `landing_files` where it
    holds assets by day without `days` and the days are not all known before the files are read: the folder is
    listed in this run, or a registered file has no parse in `cache`. [] when nothing is lacking."""
    files, folder = dg.AssetKey("landing_files"), dg.AssetKey("landing_folder")
    chosen, by_day = set(selected), {dg.AssetKey(name) for name in DAY_ASSETS} & set(selected)
    files_known = registered(instance)
    needed = [folder] if (by_day or files in chosen) and folder not in chosen and not files_known else []
    parsed = {name for name, _ in cached_files(cache)}
    if by_day and days is None and files not in chosen and (
            folder in chosen or needed or not set(files_known) <= parsed):
        needed.append(files)
    return needed


def runs_over_files(selected: list[dg.AssetKey], instance: dg.DagsterInstance, cache: Path | None = None,
                    days: tuple[date, date] | None = None) -> Iterator[tuple[list[dg.AssetKey], dict[str, str]]]:
    """The runs (asset keys, tags) that materialize `selected`, to be executed one after the other.

    One run, unless `selected` holds partitioned assets: `landing_folder` first when selected (it
    registers the files), then `landing_files` over every registered file (`range_tags`), then the rest,
    over every day those files hold (`day_tags`, from their parses in `cache`), or over `days` (first, last)
    where given, when it holds assets by day. With no file registered, or no day found, the rest goes without
    the partitioned assets (ingestion then says what the folder lacks)."""
    files, folder = dg.AssetKey("landing_files"), dg.AssetKey("landing_folder")
    by_day = {dg.AssetKey(name) for name in DAY_ASSETS}
    if files not in selected and not by_day & set(selected):
        yield list(selected), {}
        return
    if folder in selected:
        yield [folder], {}
    if files in selected and (tags := range_tags(registered(instance))):
        yield [files], tags
    rest = [key for key in selected if key not in (folder, files)]
    if not rest:
        return
    if days is not None:
        tags = day_tags(list(days))
    else:
        tags = day_tags(landing_days(instance, cache)) if cache is not None else {}
    if not tags:
        rest = [key for key in rest if key not in by_day]
    if rest:
        yield rest, tags


def config_for(run_config: dict | None, keys: list[dg.AssetKey]) -> dict | None:
    """`run_config` with only the ops among `keys` (a run refuses config for an op it does not hold)."""
    if not run_config or "ops" not in run_config:
        return run_config
    names = {key.to_user_string() for key in keys}
    return {**run_config, "ops": {op: value for op, value in run_config["ops"].items() if op in names}}


def execute_over_files(jobs: dict[str, dg.JobDefinition], instance: dg.DagsterInstance, keys: list[dg.AssetKey],
                       cache: Path, run_config: dict | None = None, tags: dict | None = None,
                       days: tuple[date, date] | None = None) -> list[dg.ExecuteInProcessResult]:
    """`execute_in_process` of `keys` in the runs of `runs_over_files`, stopping at the first that fails: the
    files' run by `jobs["files"]`, the others by `jobs["main"]` (a job holds one partitions definition)."""
    results = []
    for run_keys, files in runs_over_files(keys, instance, cache, days):
        job = jobs["files" if dg.AssetKey("landing_files") in run_keys else "main"]
        results.append(job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=run_keys,
                                              run_config=config_for(run_config, run_keys),
                                              tags={**(tags or {}), **files}))
        if not results[-1].success:
            break
    return results
