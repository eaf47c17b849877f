"""The served model: `sessionbert serve` on the tiny graph's serving_model, asked over HTTP on loopback, bad
requests included; and the same pyfunc through MLflow's own loader."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import polars as pl
import pytest

from sessionbert_core.recommend.ranking import used_services
from sessionbert_core.serving.pyfunc import RequestError, events_from_request, rows_from_payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    """POST /invocations with exactly these headers (Content-Type JSON unless given), and the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body,
                           headers={"Content-Type": "application/json"} if headers is None else headers)
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    assert b"Traceback" not in text and b'File "' not in text, text[:2000]  # no stack trace in any answer
    return response.status, json.loads(text or b"{}")


def _records(events: pl.DataFrame) -> bytes:
    rows = events.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")).to_dicts()
    return json.dumps({"dataframe_records": rows}).encode()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """`sessionbert serve` (uvicorn, one worker) on the tiny graph's serving_model, on a loopback port."""
    home, _ = trained
    assert (home / "serving_model" / "MLmodel").exists(), "the graph did not build serving_model"
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "sessionbert_assets.cli", "serve", "--model",
                                    str(home / "serving_model"), "--port", str(port), "--workers", "1"], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # its own group: stops whole
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
                pytest.fail(f"sessionbert serve exited:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail(f"sessionbert serve did not answer /ping in 180 s:\n{log.read_text()[-3000:]}")
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
    raise RuntimeError(f"sessionbert serve (pid {process.pid}) survived SIGKILL")


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


def _view(**change) -> dict:
    return {"user_id": "u", "session_id": "s", "timestamp": "2026-01-01T00:00:00Z", "service": "logs",
            "page": "home"} | change


def _json(*views: dict) -> bytes:
    return json.dumps({"dataframe_records": list(views)}).encode()


def test_a_malformed_request_gets_a_4xx_with_a_clear_message_and_no_stack_trace(server):
    _, port = server
    view = _view()
    del view["page"]
    refused = {  # body -> (status, what the message says)
        _json(view): (400, "missing column(s) page"),
        _json(_view(timestamp="yesterday")): (400, "unparseable timestamp (yesterday) in 1 row(s) (rows 0)"),
        _json(_view(), _view(user_id="")): (400, "missing user_id in 1 row(s) (rows 1)"),
        _json(_view(user_id="u\x00")): (400, "control character in user_id ('\\x00')"),
        _json(_view(page="home\u202e")): (400, "control character in page ('\\u202e')"),
        _json(_view(session_id="s" * 600_000)): (400, "session_id longer than 512 characters (600000 characters)"),
        _json(_view(user_id=["a"])): (400, "row 0: `user_id` is a list"),
        _json(_view(), _view(service=True)): (400, "row 1: `service` is true/false"),
        _json(_view(page={"a": 1})): (400, "row 0: `page` is an object"),
        _json(_view(user_id=201.0)): (400, "row 0: `user_id` is a fraction"),
        _json(_view(billing_tier="platinum")): (400, "unknown billing tier (platinum)"),
        b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}": (400, "nested too deeply"),
        b"{not json": (400, "the body is not JSON"),
        b"\xff\xfe": (400, "the body is not JSON"),
        b"[1, 2]": (400, "one key, dataframe_records"),
        b'{"dataframe_records": {"user_id": "u"}}': (400, "dataframe_records is a list"),
        b'{"dataframe_records": [1]}': (400, "row 0 of dataframe_records is not a JSON object"),
        b'{"dataframe_split": {"columns": ["user_id"], "data": [["u", "v"]]}}': (400, "a list of 1 values"),
        b'{"dataframe_records": []}': (400, "no page views"),
    }
    for body, (expected_status, expected) in refused.items():
        status, answer = _post(port, body)
        assert status == expected_status and expected in answer["message"], (body[:80], answer)
        assert len(json.dumps(answer)) < 2_000  # nothing the client sent is echoed at length
    status, answer = _post(port, _json(_view()), headers={})
    assert status == 400 and "no Content-Type" in answer["message"], answer
    status, answer = _post(port, _json(_view()), headers={"Content-Type": "text/csv"})
    assert status == 415 and "application/json" in answer["message"], answer
    # and the server still answers after them, in both of MLflow's shapes
    status, _ = _post(port, _json(_view(timestamp=1767225600)))
    assert status == 200
    split = {"columns": list(_view()), "data": [list(_view().values())]}
    status, answer = _post(port, json.dumps({"dataframe_split": split}).encode())
    assert status == 200 and answer["predictions"][0]["user_id"] == "u", answer


def test_an_oversized_request_is_refused_before_it_is_read(server):
    _, port = server
    # 5 MB announced, 10 bytes sent: the answer comes from the header alone, at once
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 5000000\r\n\r\n" + b'{"datafram')
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):  # the head, then the JSON body
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"at most 2,000,000" in answer and time.monotonic() - started < 1.0
    # more page views than a request may hold, though the bytes are within the limit: refused before any model
    started = time.monotonic()
    status, answer = _post(port, _json(*[_view(session_id=str(i)) for i in range(5_001)]))
    assert status == 413 and "5001 page views in one request; at most 5000" in answer["message"], answer
    assert time.monotonic() - started < 1.0


def test_a_request_past_its_time_limit_gets_a_503_and_the_model_stops(trained):
    from sessionbert_core.serving.http import Limits, create_app

    home, _ = trained
    app = create_app(home / "serving_model", Limits(seconds=0.0))
    status, answer = asyncio.run(_asgi_post(app, _json(_view())))
    assert status == 503 and "longer than its limit of 0 s" in answer["message"], answer
    model = mlflow.pyfunc.load_model(str(home / "serving_model")).unwrap_python_model()
    with pytest.raises(TimeoutError, match="ran past its time limit before embedding sessions"):
        model.answer(events_from_request(pl.DataFrame(_view(), schema=dict.fromkeys(_view(), pl.String))),
                     deadline=time.monotonic() - 1)


async def _asgi_post(app, body: bytes) -> tuple[int, dict]:
    """One POST /invocations through the ASGI app in this process (no HTTP client library needed)."""
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize("ranker", ["persona", "markov", "popularity"])
def test_the_server_ranks_with_the_ranker_the_table_served(trained, tmp_path, ranker):
    from sessionbert_core.serving.pyfunc import RankingInputs, save_serving_model

    home, _ = trained
    served = mlflow.pyfunc.load_model(str(home / "serving_model")).unwrap_python_model()
    assert served.settings["ranker"] == pl.read_parquet(home / "recommendation_table.parquet")["ranker"][0]
    # the same model saved as if `ranker` had won the backtest
    artifacts = home / "serving_model" / "artifacts"
    settings = json.loads((artifacts / "settings.json").read_text()) | {"ranker": ranker}
    splits = pl.read_parquet(home / "session_splits.parquet")
    folder = save_serving_model(tmp_path / "model", artifacts / "finetuned_model", artifacts / "pretrained_model",
                                artifacts / "cluster_centroids.parquet", artifacts / "persona_mapping.parquet",
                                pl.read_parquet(artifacts / "known_users.parquet"), settings,
                                RankingInputs.tables(ranker, splits), artifacts / "persona_space")
    model = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
    events = pl.read_parquet(home / "raw_sessions.parquet")
    newcomer = events.filter(pl.col("user_id") == events["user_id"][-1]).with_columns(user_id=pl.lit("newcomer"))
    answer = model.answer(events_from_request(newcomer.with_columns(pl.col("timestamp").cast(pl.String))))
    services = answer.row(0, named=True)["services"]
    assert 0 < len(services) <= 5 and not set(services) & set(newcomer["service"])
    if ranker == "popularity":  # the most adopted services of the pipeline's users, not of this request
        adopted = (RankingInputs.tables(ranker, splits)["adoptions"].group_by("service").len()
                   .filter(~pl.col("service").is_in(newcomer["service"].implode())).sort("len", descending=True))
        assert services[0] in adopted.filter(pl.col("len") == adopted["len"].max())["service"].to_list()


def test_mlflows_own_loader_serves_the_same_answers(trained):
    home, _ = trained
    events = pl.read_parquet(home / "raw_sessions.parquet").head(30)
    model = mlflow.pyfunc.load_model(str(home / "serving_model"))
    answer = pl.from_pandas(model.predict(events.to_pandas()))
    assert set(answer["user_id"]) == set(events["user_id"])
    with pytest.raises(mlflow.exceptions.MlflowException, match="missing column"):
        model.predict(events.drop("page").to_pandas())


def test_requests_are_checked_before_any_model_runs():
    with pytest.raises(RequestError, match="no page views"):
        events_from_request(pl.DataFrame({"user_id": []}))
    with pytest.raises(RequestError, match="missing user_id in 1 row"):
        events_from_request(pl.DataFrame({"user_id": [" "], "session_id": ["s"], "timestamp": ["2026-01-01"],
                                          "service": ["a"], "page": ["b"]}))
    events = events_from_request(pl.DataFrame({"user_id": ["u"], "session_id": ["s"], "timestamp": ["1767225600"],
                                               "service": ["a"], "page": ["b"], "city": ["Paris"]}))
    assert events["timestamp"][0].year == 2026 and events["city"][0] == "Paris" and events["country"][0] is None
    rows = rows_from_payload({"dataframe_records": [_view(timestamp=1767225600.5, user_id=42)]})
    assert rows.row(0, named=True) == _view(timestamp="1767225600.5", user_id="42")
