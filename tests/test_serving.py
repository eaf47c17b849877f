"""The served model: `sessionbert serve` on the tiny graph's serving_model, asked over HTTP on loopback, bad
requests included; and the same pyfunc through MLflow's own loader."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace

import mlflow
import polars as pl
import pytest

from sessionbert_core.recommend.ranking import used_services
from sessionbert_core.serving.pyfunc import Work
from sessionbert_core.serving.request import RequestError, events_from_request, rows_from_payload

# the server under test: a time limit a few times what the tiny model's heaviest allowed request costs (about
# a second on 2 cores), and short head and body limits, so each can be seen to hold
SERVED = {"seconds": 6.0, "header_seconds": 1.0, "body_seconds": 2.0}


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
        flags = [part for name, value in SERVED.items() for part in ("--" + name.replace("_", "-"), str(value))]
        process = subprocess.Popen([sys.executable, "-m", "sessionbert_assets.cli", "serve", "--model",
                                    str(home / "serving_model"), "--port", str(port), "--workers", "1", *flags],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # its own group
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
        _json(_view()).replace(b'"u"', b'"\\ud800"'): (400, "row 0: `user_id` holds a lone surrogate"),
        _json(_view()).replace(b'"home"', b'"h\\udfff"'): (400, "row 0: `page` holds a lone surrogate"),
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
    status, answer = _post(port, _json(_view(user_id="u\U0001f600")))  # sent as a surrogate pair: one character
    assert status == 200 and answer["predictions"][0]["user_id"] == "u\U0001f600", answer
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


def _trickle(port: int, head: bytes, body: bytes = b"", every: float = 0.25) -> tuple[bytes, float]:
    """Send `head`, then `body`, a byte every `every` seconds (all of `head` at once when `body` is given);
    the server's answer and the seconds until the connection closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.setblocking(False)
        answer, pending = b"", [head, *body] if body else list(head)
        while time.monotonic() - started < 30:
            with contextlib.suppress(BlockingIOError):
                chunk = connection.recv(65536)
                if not chunk:  # closed by the server
                    return answer, time.monotonic() - started
                answer += chunk
                continue
            if pending:
                with contextlib.suppress(OSError):  # the server may close as we write
                    item = pending.pop(0)
                    connection.send(item if isinstance(item, bytes) else bytes([item]))
            time.sleep(every)
    return answer, time.monotonic() - started


def test_a_slow_client_gets_a_408_and_its_connection_closes(server):
    _, port = server
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60\r\n\r\n")
    body = b'{"dataframe_records": [' + b" " * 36 + b"]}"
    head_limit, body_limit = SERVED["header_seconds"], SERVED["body_seconds"]
    for sent, part, limit in (((head,), "head", head_limit),  # 24 s at this pace
                              ((head, body), "body", body_limit), ((b"",), "head", head_limit)):  # silent
        answer, seconds = _trickle(port, *sent)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert f"the request's {part} did not arrive within {limit:g} s".encode() in answer, answer
        assert limit <= seconds < limit + 3
    assert _post(port, _json(_view()))[0] == 200  # and the server is well


def _heaviest_allowed(home, limits) -> bytes:
    """The tiny graph's users as new ones, as many as `limits` allow: the most work a request may ask."""
    from sessionbert_core.serving.pyfunc import Plan

    model = mlflow.pyfunc.load_model(str(home / "serving_model")).unwrap_python_model()
    events = pl.read_parquet(home / "raw_sessions.parquet").with_columns(user_id="new-" + pl.col("user_id"))
    users = events["user_id"].unique(maintain_order=True)

    def first(n: int) -> pl.DataFrame:
        return events.filter(pl.col("user_id").is_in(users.head(n).implode())).head(limits.max_page_views)

    def allowed(n: int) -> Plan | None:
        with contextlib.suppress(RequestError):
            return model.plan(events_from_request(first(n).with_columns(pl.col("timestamp").cast(pl.String))),
                              limits.work())
        return None

    low, high = 1, users.len()
    while low < high:  # the most users whose work is within every cap
        middle = (low + high + 1) // 2
        low, high = (middle, high) if allowed(middle) else (low, middle - 1)
    assert allowed(low).work.tokens > limits.max_tokens * 0.9 or allowed(low).work.sessions > limits.max_sessions * 0.9
    return _records(first(low))


def test_a_light_request_answers_in_time_behind_eight_of_the_heaviest(server):
    from sessionbert_core.serving.http import Limits

    home, port = server
    heavy = _heaviest_allowed(home, Limits(**SERVED))
    started = time.monotonic()
    assert _post(port, heavy)[0] == 200  # allowed
    alone = time.monotonic() - started
    events = pl.read_parquet(home / "raw_sessions.parquet")
    known = pl.read_parquet(home / "user_personas.parquet")["user_id"][0]
    light = _records(events.filter(pl.col("session_id") == events.filter(pl.col("user_id") == known)["session_id"][-1]))
    with ThreadPoolExecutor(8) as clients:
        heavies = [clients.submit(_post, port, heavy) for _ in range(8)]
        wait(heavies, return_when=FIRST_COMPLETED)  # the first answered: eight read and counted, one runs
        waiting = sum(not h.done() for h in heavies)
        started = time.monotonic()
        status, answer = _post(port, light)
        seconds = time.monotonic() - started
        answered_meanwhile = waiting - sum(not h.done() for h in heavies)
        statuses = [h.result()[0] for h in heavies]
    assert status == 200 and answer["predictions"][0]["user_id"] == known and seconds < SERVED["seconds"], answer
    # it waited for the one running, not for the others (in turn, it would wait until each had run or run out
    # of time)
    assert waiting >= 3 and answered_meanwhile <= 1, (waiting, answered_meanwhile, seconds, alone)
    assert set(statuses) <= {200, 503}, statuses


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


def _new_users(count: int) -> bytes:
    """One page view each of `count` users the model never saw (the issue's 5,000 in 0.4 MB)."""
    return _json(*[_view(user_id=f"new-{i}", service=f"s{i % 7}", page=f"p{i % 13}") for i in range(count)])


@pytest.fixture
def one_thread():
    """torch on one thread, as in a server worker per core: times that do not swing with the machine's load."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_model_stops_at_its_deadline_between_forward_passes(trained, one_thread):
    """Past its deadline the model stops at its next forward pass, so the 503 comes as the time runs out and
    the worker computes nothing after it (a thread left running would go on to the end)."""
    from sessionbert_core.serving.http import Limits, create_app

    home, _ = trained
    everyone = pl.read_parquet(home / "raw_sessions.parquet").with_columns(user_id="new-" + pl.col("user_id"))
    heavy = _records(everyone.head(5_000))  # every user of the tiny graph as a new one: seconds of work
    model = mlflow.pyfunc.load_model(str(home / "serving_model")).unwrap_python_model()
    plan = model.plan(events_from_request(rows_from_payload(json.loads(heavy))))
    started = time.monotonic()
    model.answer(plan)
    answering, started = time.monotonic() - started, time.monotonic()
    with pytest.raises(TimeoutError, match=r"ran past its time limit before (embedding sessions|predicting)"):
        model.answer(plan, deadline=started + answering / 4)
    assert time.monotonic() - started < answering / 2  # soon after the deadline, long before the end
    # over HTTP, with a limit halfway through the whole request
    uncapped = Limits(seconds=60, max_new_users=10**4, max_sessions=10**4, max_tokens=10**6)
    started = time.monotonic()
    assert asyncio.run(_asgi_post(create_app(home / "serving_model", uncapped), heavy))[0] == 200
    whole = time.monotonic() - started
    app = create_app(home / "serving_model", replace(uncapped, seconds=whole / 2))
    started = time.monotonic()
    status, answer = asyncio.run(_asgi_post(app, heavy))
    answered, cpu = time.monotonic(), time.process_time()
    assert status == 503 and "longer than its limit of" in answer["message"], answer
    assert answered - started < whole * 3 / 4 and not app.state.turns.busy
    time.sleep(whole / 2)
    assert time.process_time() - cpu < whole / 20  # no prediction runs on after the 503


def test_work_over_a_cap_is_refused_with_a_413_naming_it_before_any_model_runs(trained, monkeypatch):
    from sessionbert_core.serving.http import Limits, create_app
    from sessionbert_core.serving.pyfunc import SessionBertRecommender

    home, _ = trained
    app = create_app(home / "serving_model", Limits())

    def no_model(*args, **kwargs):
        raise AssertionError("a model ran for a request over a cap")

    monkeypatch.setattr(SessionBertRecommender, "answer", no_model)
    day = [f"2026-01-{d:02d}T10:00:00Z" for d in range(1, 21)]
    long_session = [_view(user_id=f"new-{u}", timestamp=f"2026-01-01T10:{v // 60:02d}:{v % 60:02d}Z",
                          service=f"s{v % 7}", page=f"p{v % 13}") for u in range(85) for v in range(58)]
    refused = {  # body -> what the 413 says
        _new_users(101): "101 users the model never saw (each one embedded for a persona); at most 100 "
                         "(max_new_users)",
        _json(*[_view(user_id=f"new-{u}", session_id=str(d), timestamp=day[d]) for u in range(51)
                for d in range(20)]): "1,020 sessions for the models to read (each user's last ones); at most 1,000 "
                                      "(max_sessions)",
        _json(*long_session): "tokens in the sessions for the models to read; at most 20,000 (max_tokens)",
    }
    for body, expected in refused.items():
        status, answer = asyncio.run(_asgi_post(app, body))
        assert status == 413 and expected in answer["message"], answer
    assert Limits.from_env({"SESSIONBERT_SERVE_MAX_TOKENS": "5", "SESSIONBERT_SERVE_HEADER_SECONDS": "0.5"}) == \
        Limits(max_tokens=5, header_seconds=0.5)


def test_a_user_costs_their_last_sessions_whatever_they_post(trained):
    """5,000 one-page-view sessions of one user on one day (each the context of every later one) cost the
    models the user's last sessions only; the older ones still count as used, and as the same day's context."""
    from sessionbert_core.data.serialize import serialize_sessions

    home, _ = trained
    model = mlflow.pyfunc.load_model(str(home / "serving_model")).unwrap_python_model()
    views = [_view(session_id=f"s{i:04d}", timestamp=f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                   service=f"svc{i % 11}", page=f"p{i % 13}") for i in range(5_000)]
    events = events_from_request(rows_from_payload({"dataframe_records": views}))
    started = time.monotonic()
    plan = model.plan(events)
    answer = model.answer(plan).row(0, named=True)
    assert time.monotonic() - started < 10  # all 5,000 serialized against each other: minutes and gigabytes
    assert plan.work == Work(new_users=1, sessions=plan.unseen.height, tokens=plan.work.tokens)
    assert plan.work.sessions == max(model.recent, model.settings["user_vector_sessions"]) < 5_000
    assert answer["sessions"] == 5_000 and not set(answer["services"]) & {f"svc{i}" for i in range(11)}
    few = events.filter(pl.col("session_id") >= "s4900")  # the same day's last 100: the context is the same
    whole = serialize_sessions(few).join(plan.sessions, on=["user_id", "session_id"], suffix="_read")
    assert whole.height == plan.work.sessions and whole.filter(pl.col("text") != pl.col("text_read")).is_empty()


def _recorded(ran: list):
    """A stand-in prediction that sleeps `seconds` and appends (name, start, end) to `ran`."""
    def predict(name: str, seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        ran.append((name, started, time.monotonic()))
    return predict


def test_a_light_request_waits_for_one_heavy_prediction_not_a_queue_of_them():
    from sessionbert_core.serving.turns import ModelTurns

    turns, ran = ModelTurns(), []
    predict = _recorded(ran)

    async def clients() -> None:
        far = time.monotonic() + 60
        heavy = [asyncio.create_task(turns.run(20_000, far, predict, f"heavy {i}", 0.2)) for i in range(8)]
        await asyncio.sleep(0.05)  # the first runs, seven wait
        heavy[3].cancel()  # a request gone while it waits is skipped
        late = asyncio.create_task(turns.run(20_000, time.monotonic() + 0.1, predict, "out of time", 0))
        await asyncio.sleep(0.01)
        await turns.run(30, far, predict, "light", 0.01)
        with pytest.raises(TimeoutError):
            await late
        await asyncio.gather(*heavy, return_exceptions=True)

    asyncio.run(clients())
    names = [name for name, _, _ in ran]
    assert names == ["heavy 0", "light", "heavy 1", "heavy 2", "heavy 4", "heavy 5", "heavy 6", "heavy 7"]
    spans = sorted((start, end) for _, start, end in ran)
    assert all(end <= following for (_, end), (following, _) in itertools.pairwise(spans))  # never two at once
    assert not turns.busy


def test_a_cancelled_request_keeps_its_turn_until_its_prediction_returns():
    from sessionbert_core.serving.turns import ModelTurns

    turns, ran = ModelTurns(), []
    predict = _recorded(ran)

    async def clients() -> None:
        far = time.monotonic() + 60
        first = asyncio.create_task(turns.run(1, far, predict, "first", 0.3))
        await asyncio.sleep(0.05)
        first.cancel()  # as asyncio.wait_for would at a time limit: the thread runs on regardless
        await turns.run(1, far, predict, "second", 0)

    asyncio.run(clients())
    (_, _, first_end), (_, second_start, _) = ran
    assert [name for name, _, _ in ran] == ["first", "second"] and first_end <= second_start


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
