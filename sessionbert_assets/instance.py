"""The Dagster instance folder under SESSIONBERT_HOME, shared by `make run` and `make ui`."""

from __future__ import annotations

from pathlib import Path

from sessionbert_core.config import export, settings_from_env

DAGSTER_YAML = """\
# The Dagster instance of this SESSIONBERT_HOME: SQLite run, event and schedule storage in this folder.
telemetry:
  enabled: false
concurrency:
  pools:
    # the training assets run in the pool `gpu`: one at a time, across all runs
    default_limit: 1
"""


def prepare(home: Path) -> Path:
    """Create `$DAGSTER_HOME` (default `$SESSIONBERT_HOME/dagster`) with its dagster.yaml, export it, return it."""
    dagster_home = Path(settings_from_env().dagster_home or Path(home) / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    # ours (first line) is kept current; a dagster.yaml written by the user is left alone
    if not config.exists() or config.read_text().splitlines()[:1] == DAGSTER_YAML.splitlines()[:1]:
        config.write_text(DAGSTER_YAML)
    export({"DAGSTER_HOME": str(dagster_home)})
    return dagster_home


if __name__ == "__main__":
    from sessionbert_core.config import default_home

    print(prepare(default_home()))
