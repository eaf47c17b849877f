"""Shared fixtures: one tiny world per test session, and a helper to build landing folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionbert_core.config import get_profile
from sessionbert_core.world import WorldPaths, generate_world

APACHE_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "apache_logs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    return generate_world(tmp_path_factory.mktemp("world") / "tiny", get_profile("tiny").world, seed=0)


@pytest.fixture
def landing(tmp_path: Path):
    """Write files into a fresh landing folder: landing({"events.csv": "..."}) -> folder."""
    def make(files: dict[str, str | bytes]) -> Path:
        folder = tmp_path / "landing"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            path = folder / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return folder
    return make
