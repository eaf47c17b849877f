"""`sessionbert run --select` of a table by day on a fresh home: it reads the landing files it needs first, and
says `succeeded` only when every selected asset was materialized."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from sessionbert_assets.cli import main
from sessionbert_assets.partitions import sync, upstream_needed
from sessionbert_core import storage
from sessionbert_core.data.ingest import cached_days

HEADER = "user_id,session_id,timestamp,service,page\n"


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh SESSIONBERT_HOME on tiny reading `source`: fresh_home(source) -> home."""
    def make(source: Path) -> Path:
        home = tmp_path / "home"
        for name, value in (("SESSIONBERT_HOME", home), ("SESSIONBERT_PROFILE", "tiny"),
                            ("SESSIONBERT_SOURCE", source), ("DAGSTER_HOME", home / "dagster")):
            monkeypatch.setenv(name, str(value))
        return home
    return make


def test_a_table_by_day_selected_with_the_folder_reads_the_files_for_its_days(tiny_world, fresh_home, capsys):
    home = fresh_home(tiny_world.landing)
    assert main(["run", "--select", "landing_folder,raw_sessions"]) == 0
    out = capsys.readouterr().out
    assert ("billing_records, raw_sessions need the days of the landing files: reading them first (landing_files)"
            in out)
    assert ": succeeded in " in out
    days = [day.isoformat() for day in cached_days(home / "ingest_cache")]
    assert len(days) > 1 and [p.stem for p in storage.day_paths(home / "raw_sessions.parquet")] == days
    # the files are read now: the table alone runs over their days, with nothing added
    assert main(["run", "--select", "raw_sessions"]) == 0
    out = capsys.readouterr().out
    assert "need the days" not in out and ": succeeded in " in out


def test_a_table_by_day_that_no_file_has_a_day_of_is_a_failed_run(landing, fresh_home, capsys):
    # every row quarantined (no timestamp reads as one): the files hold no day, so raw_sessions cannot run
    fresh_home(landing({"events.csv": HEADER + "u1,s1,not a time,compute,home\n"}))
    assert main(["run", "--select", "raw_sessions"]) == 1
    captured = capsys.readouterr()
    assert ("billing_records, raw_sessions need the days of the landing files: listing and reading them first "
            "(landing_folder, landing_files)") in captured.out
    assert ": FAILED in " in captured.out and "succeeded" not in captured.out
    assert "selected but not materialized: billing_records, raw_sessions (no day was found" in captured.err


def test_a_partitioned_selection_adds_what_registers_and_reads_its_files(tmp_path):
    instance, cache = dg.DagsterInstance.ephemeral(), tmp_path / "ingest_cache"
    folder, files, raw, model = (dg.AssetKey(n) for n in ("landing_folder", "landing_files", "raw_sessions",
                                                           "tokenizer"))
    assert upstream_needed([raw], instance, cache) == [folder, files]  # nothing registered, no day known
    assert upstream_needed([files], instance, cache) == [folder]
    assert upstream_needed([raw], instance, cache, days=(date(2026, 3, 2),) * 2) == [folder]  # days given
    assert upstream_needed([model], instance, cache) == []
    sync(instance, ["events.csv"])
    assert upstream_needed([raw], instance, cache) == [files]  # registered, not read yet
    assert upstream_needed([folder, raw], instance, cache) == [files]  # the folder may register new files
    assert upstream_needed([folder, files, raw, model], instance, cache) == []  # `make run`: all there
