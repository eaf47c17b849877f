"""The landing folder's files as Dagster partitions: one dynamic partition per file, named by its path there.

Days are not known before the files are read (a file may hold many days, a day many files), so the
ingestion's unit of work is the file: `landing_folder` and the new-data sensor register the files
(`landing_files` partitions), each partition reads and validates one file alone, and the assets after
it combine them. A run over several files carries Dagster's partition-range tags (`range_tags`), so
one run parses many files, each still alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

LANDING_FILES = dg.DynamicPartitionsDefinition(name="landing_files")
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


def runs_over_files(selected: list[dg.AssetKey], instance: dg.DagsterInstance
                    ) -> Iterator[tuple[list[dg.AssetKey], dict[str, str]]]:
    """The runs (asset keys, tags) that materialize `selected`, to be executed one after the other.

    One run, unless `selected` holds `landing_files`: then `landing_folder` first when selected (it
    registers the files), then the rest over every registered file (`range_tags`); with no file
    registered, the rest without `landing_files` (ingestion then says what the folder lacks)."""
    files, folder = dg.AssetKey("landing_files"), dg.AssetKey("landing_folder")
    if files not in selected:
        yield list(selected), {}
        return
    rest = [key for key in selected if key != folder]
    if folder in selected:
        yield [folder], {}
    tags = range_tags(registered(instance))
    yield (rest if tags else [key for key in rest if key != files]), tags


def config_for(run_config: dict | None, keys: list[dg.AssetKey]) -> dict | None:
    """`run_config` with only the ops among `keys` (a run refuses config for an op it does not hold)."""
    if not run_config or "ops" not in run_config:
        return run_config
    names = {key.to_user_string() for key in keys}
    return {**run_config, "ops": {op: value for op, value in run_config["ops"].items() if op in names}}


def execute_over_files(job: dg.JobDefinition, instance: dg.DagsterInstance, keys: list[dg.AssetKey],
                       run_config: dict | None = None, tags: dict | None = None
                       ) -> list[dg.ExecuteInProcessResult]:
    """`job.execute_in_process` of `keys` in the runs of `runs_over_files`, stopping at the first that fails."""
    results = []
    for run_keys, files in runs_over_files(keys, instance):
        results.append(job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=run_keys,
                                              run_config=config_for(run_config, run_keys),
                                              tags={**(tags or {}), **files}))
        if not results[-1].success:
            break
    return results
