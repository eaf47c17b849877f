"""The served model: `mlflow models serve` on the tiny graph's serving_model, asked over HTTP on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from sessionbert_core.recommend import used_services
from sessionbert_core.serving import RequestError, events_from_request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _records(events: pl.DataFrame) -> bytes:
    rows = events.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")).to_dicts()
    return json.dumps({"dataframe_records": rows}).encode()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    home, _ = trained
    assert (home / "serving_model" / "MLmodel").exists(), "the graph did not build serving_model"
    port = _free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        # the server execs `uvicorn`, found on PATH: the environment's own bin folder first
        env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        process = subprocess.Popen([mlflow, "models", "serve", "-m", str(home / "serving_model"), "--env-manager",
                                    "local", "-h", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)  # its own group: uvicorn and workers stop with it
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None:
                pytest.fail(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        else:
            pytest.fail(f"mlflow models serve did not answer /ping in 180 s:\n{log.read_text()[-3000:]}")
        yield home, port
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (its id is the server's pid); SIGKILL after 30 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"mlflow models serve (pid {process.pid}) survived SIGKILL")


def test_a_known_and_an_unseen_user_get_a_persona_and_new_services(server):
    home, port = server
    events = pl.read_parquet(home / "raw_sessions.parquet")
    personas = pl.read_parquet(home / "user_personas.parquet")
    used = used_services(pl.read_parquet(home / "session_splits.parquet"),
                         pl.read_parquet(home / "billing_records.parquet"))
    known_id, other_id = personas["user_id"][0], personas["user_id"][1]
    recent = events.filter(pl.col("user_id") == known_id)
    recent = recent.filter(pl.col("session_id").is_in(recent["session_id"].unique(maintain_order=True).tail(8)))
    unseen = events.filter(pl.col("user_id") == other_id).with_columns(user_id=pl.lit("never-seen-user"))
    status, body = _post(port, _records(pl.concat([recent, unseen])))
    assert status == 200, body
    answers = {row["user_id"]: row for row in body["predictions"]}
    assert set(answers) == {known_id, "never-seen-user"}

    known = answers[known_id]
    assert known["persona_source"] == "assigned"
    assert known["persona"] == personas.filter(pl.col("user_id") == known_id)["persona"][0]
    history = set(used.filter(pl.col("user_id") == known_id)["service"])
    assert 0 < len(known["services"]) <= 5 and len(set(known["services"])) == len(known["services"])
    assert not set(known["services"]) & history  # nothing the user ever used

    new = answers["never-seen-user"]
    assert new["persona_source"] == "inferred from these sessions"
    tags = set(pl.read_parquet(home / "persona_mapping.parquet")["persona"]) | {""}
    assert new["persona"] in tags
    assert 0 < len(new["services"]) <= 5
    assert not set(new["services"]) & set(unseen["service"])  # nothing in the sessions it was shown


def test_a_malformed_request_gets_a_400_with_a_clear_message(server):
    _, port = server
    status, body = _post(port, json.dumps({"dataframe_records": [
        {"user_id": "u", "session_id": "s", "timestamp": "2026-01-01T00:00:00Z", "service": "logs"}]}).encode())
    assert status == 400 and "missing column(s) page" in body["message"], body
    status, body = _post(port, json.dumps({"dataframe_records": [
        {"user_id": "u", "session_id": "s", "timestamp": "yesterday", "service": "logs", "page": "home"}]}).encode())
    assert status == 400 and "`timestamp` is not a timestamp" in body["message"], body
    status, body = _post(port, b"{not json")
    assert 400 <= status < 500, body
    # and the server still answers after them
    status, _ = _post(port, json.dumps({"dataframe_records": [
        {"user_id": "u", "session_id": "s", "timestamp": 1767225600, "service": "logs", "page": "home"}]}).encode())
    assert status == 200


def test_requests_are_checked_before_any_model_runs():
    with pytest.raises(RequestError, match="no page views"):
        events_from_request(pl.DataFrame({"user_id": []}))
    with pytest.raises(RequestError, match="`user_id` is empty in 1 row"):
        events_from_request(pl.DataFrame({"user_id": [""], "session_id": ["s"], "timestamp": ["2026-01-01"],
                                          "service": ["a"], "page": ["b"]}))
    events = events_from_request(pl.DataFrame({"user_id": ["u"], "session_id": ["s"], "timestamp": ["1767225600"],
                                               "service": ["a"], "page": ["b"], "city": ["Paris"]}))
    assert events["timestamp"][0].year == 2026 and events["city"][0] == "Paris" and events["country"][0] is None
