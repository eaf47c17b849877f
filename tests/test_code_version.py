"""An asset's code version follows the project code its function reaches (`sessionbert_assets.code_version`)."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from sessionbert_assets import code_version as versions

CORE = """
    THRESHOLD = 0.8

    def helper(x):
        return x * 2

    def work(x):
        return helper(x) > THRESHOLD

    def unused():
        return 1
"""
ASSETS = """
    import cvcore

    def asset(x):
        from cvcore import THRESHOLD
        return cvcore.work(x), THRESHOLD
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Two modules standing for the core and the assets; `version(core=...)` rewrites the core and digests the asset."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(versions, "PROJECT", ("cvcore", "cvassets"))

    def version(core: str = CORE) -> str:
        for name, text in (("cvcore", core), ("cvassets", ASSETS)):
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
            sys.modules.pop(name, None)
        versions._source_of.cache_clear()
        importlib.invalidate_caches()
        return versions.code_version(importlib.import_module("cvassets").asset)

    yield version
    for name in ("cvcore", "cvassets"):
        sys.modules.pop(name, None)


def test_a_change_in_a_core_function_the_asset_calls_changes_its_version(project):
    before = project()
    assert project() == before  # the same code: the same version
    assert project(CORE.replace("x * 2", "x * 3")) != before  # two calls down
    assert project(CORE.replace("0.8", "0.9")) != before  # a setting it reads
    assert project(CORE.replace("return 1", "return 2")) == before  # code it cannot reach


def test_every_asset_has_a_version_that_holds_from_one_process_to_the_next():
    import subprocess

    script = ("from sessionbert_assets.definitions import defs; g = defs.resolve_asset_graph(); "
              "print(sorted((k.to_user_string(), g.get(k).code_version) for k in g.get_all_asset_keys()))")
    first, second = (subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
                     for _ in range(2))
    assert first == second and "None" not in first
