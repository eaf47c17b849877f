"""The served model over HTTP: `sessionbert serve` (`make serve`), a small Starlette app around the pyfunc.

    sessionbert serve --port 5001 [--workers N] [--max-bytes 2000000] [--max-page-views 5000] [--seconds 10]
                      [--max-new-users 100] [--max-sessions 1000] [--max-tokens 20000]
                      [--header-seconds 10] [--body-seconds 20]

It answers MLflow's scoring protocol (`POST /invocations` with `dataframe_records` or
`dataframe_split`; `GET /ping`), so a client of `mlflow models serve` needs no change, and adds
what a server facing other teams needs. What a request may cost is bounded by its `Limits`, each
checked before any model runs: the body's size from its Content-Length before a byte is read, then
while it streams (413); a head that takes longer than `header_seconds` to arrive, or a body
`body_seconds`, ends with a 408; a body that is not JSON, nested, of the wrong types or with more
page views than allowed is refused (400 or 413, a message in the contract's terms), and so is one
asking the models for more than a cap allows (new users to embed, sessions, tokens: 413 naming the
cap); identifiers pass the landing folder's rules. A request runs at most `seconds`, queueing
included: past it the model stops at its next forward pass and the request gets a 503, so a worker
never computes for a request that was answered. Each worker runs one prediction at a time on
`cores / workers` torch threads, the waiting request with the least work first (`turns`). No
response ever carries a stack trace (the server log does).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionbert_core.config import SERVE_PREFIX, export, serve_settings
from sessionbert_core.serving.connections import BODY_SECONDS, HEADER_SECONDS
from sessionbert_core.serving.pyfunc import Plan, Work
from sessionbert_core.serving.request import MAX_PAGE_VIEWS, RequestError, rows_from_payload
from sessionbert_core.serving.turns import ModelTurns

LOG = logging.getLogger("sessionbert.server")


@dataclass(frozen=True)
class Limits:
    """What one request may ask: body bytes, page views, the models' work (new users to embed, sessions and
    tokens read), seconds in all (queueing for the model included), and seconds to send its head and its
    body (kept by the connection, `TimedH11Protocol`). The work caps keep the heaviest request allowed a
    fraction of `seconds` on one core, so a light one queued behind it still answers (docs/serving.md#limits)."""

    max_bytes: int = 2_000_000
    max_page_views: int = MAX_PAGE_VIEWS
    max_new_users: int = 100
    max_sessions: int = 1_000
    max_tokens: int = 20_000
    seconds: float = 10.0
    header_seconds: float = HEADER_SECONDS
    body_seconds: float = BODY_SECONDS

    def as_env(self) -> dict[str, str]:
        return {SERVE_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        given = serve_settings(env)
        return cls(**{f.name: type(getattr(cls, f.name))(given[f.name]) for f in fields(cls) if f.name in given})

    def work(self) -> Work:
        """The most work a request may ask of the models."""
        return Work(new_users=self.max_new_users, sessions=self.max_sessions, tokens=self.max_tokens)


def create_app(model_folder: Path, limits: Limits = Limits()) -> Starlette:
    """The app serving the MLflow model folder `model_folder` (`$SESSIONBERT_HOME/serving_model`)."""
    import mlflow

    _require_model(model_folder)
    model = mlflow.pyfunc.load_model(str(model_folder)).unwrap_python_model()
    turns = ModelTurns()

    def plan(body: bytes) -> Plan:
        """The request read, checked and counted (a RequestError says what is wrong); no model runs."""
        try:
            payload = json.loads(body)
        except RecursionError:
            raise RequestError("the JSON is nested too deeply: a page view is one flat object") from None
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError
            raise RequestError(f"the body is not JSON: {str(error)[:200]}") from None
        return model.plan_rows(rows_from_payload(payload, limits.max_page_views), limits.work())

    async def invocations(request: Request) -> Response:
        deadline = time.monotonic() + limits.seconds
        body = await _body(request, limits)
        if isinstance(body, Response):
            return body
        try:
            planned = await run_in_threadpool(plan, body)
            predictions = await turns.run(planned.work.tokens, deadline, model.answer, planned, deadline)
        except RequestError as error:
            return _error(413 if error.too_large else 400, str(error))
        except TimeoutError:
            return _error(503, f"the request took longer than its limit of {limits.seconds:g} s: send fewer "
                               "page views, or retry when the server is less busy")
        return JSONResponse({"predictions": predictions.to_dicts()})

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="text/plain")

    async def failed(request: Request, error: Exception) -> Response:
        LOG.exception("request failed", exc_info=error)  # the stack trace stays in the server log
        return _error(500, f"internal error ({type(error).__name__}); the server log has the details")

    routes = [Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping, methods=["GET"]),
              Route("/health", ping, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={Exception: failed})
    app.state.turns = turns
    return app


async def _body(request: Request, limits: Limits) -> bytes | Response:
    """The request's body, or the 400/413/415 that refuses it: Content-Type and Content-Length are read first."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:
        return _error(400, "no Content-Type: send the body as application/json", close=True)
    if media != "application/json":
        return _error(415, f"Content-Type {media[:100]} is not served: send application/json", close=True)
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        return _error(400, "Content-Length is not a number", close=True)
    if declared is not None and int(declared) > limits.max_bytes:
        return _error(413, f"the body is {int(declared):,} bytes; at most {limits.max_bytes:,}", close=True)
    body = bytearray()
    try:
        async for chunk in request.stream():  # within body_seconds, or the connection ends (TimedH11Protocol)
            body += chunk
            if len(body) > limits.max_bytes:
                return _error(413, f"the body is more than {limits.max_bytes:,} bytes", close=True)
    except ClientDisconnect:
        return _error(400, "the client went away before its body arrived", close=True)  # nobody reads it
    return bytes(body)


def _require_model(model_folder: Path) -> None:
    if not (Path(model_folder) / "MLmodel").exists():
        raise ValueError(f"no served model at {model_folder}: run `make run` (it writes serving_model)")


def _error(status: int, message: str, close: bool = False) -> JSONResponse:
    """MLflow's error body; `close`: the connection ends after it (a refused body may still be on the wire)."""
    code = {400: "BAD_REQUEST", 408: "REQUEST_TIMEOUT", 413: "REQUEST_TOO_LARGE", 415: "BAD_REQUEST",
            503: "TEMPORARILY_UNAVAILABLE"}
    return JSONResponse({"error_code": code.get(status, "INTERNAL_ERROR"), "message": message}, status_code=status,
                        headers={"connection": "close"} if close else None)


def app_from_env() -> Starlette:
    """The app of one uvicorn worker, configured by `serve` through the environment."""
    import torch

    given = serve_settings()
    torch.set_num_threads(threads_per_worker(int(given.get("workers", "1"))))
    return create_app(Path(given["model"]), Limits.from_env())


def threads_per_worker(workers: int) -> int:
    """The cores of one worker, for torch's threads and polars' (set before the worker imports polars)."""
    return max(1, (os.cpu_count() or 1) // workers)


def default_workers() -> int:
    """One worker per core, up to 4: on 2 cores two one-thread workers answered one client faster than
    one two-thread worker (46 against 59 ms at p50 for a new user's session) and eight clients faster
    still (docs/results/performance.md#serving-latency)."""
    return max(1, min(4, os.cpu_count() or 1))


def serve(model_folder: Path, host: str, port: int, workers: int | None = None, limits: Limits = Limits()) -> None:
    """Run the server until interrupted (uvicorn; `workers` processes, each loading the model)."""
    import uvicorn

    _require_model(model_folder)
    workers = workers or default_workers()
    export(limits.as_env() | {SERVE_PREFIX + "MODEL": str(model_folder), SERVE_PREFIX + "WORKERS": str(workers),
                              # torch's OpenMP threads sleep between parallel regions rather than spin: spinning,
                              # two threads on a busy machine made the heaviest request 5-10x slower
                              "OMP_WAIT_POLICY": "PASSIVE",
                              # polars on the worker's cores only: a light request took a quarter less CPU on
                              # one thread than on two (2 cores, 2 workers); one worker keeps every core
                              "POLARS_MAX_THREADS": str(threads_per_worker(workers))})
    # h11, not httptools: its heads are capped in bytes (64 KB) and, in TimedH11Protocol, in seconds
    uvicorn.run("sessionbert_core.serving.http:app_from_env", factory=True, host=host, port=port, workers=workers,
                http="sessionbert_core.serving.connections:TimedH11Protocol", timeout_keep_alive=5,
                h11_max_incomplete_event_size=64 * 1024, log_level="info")
