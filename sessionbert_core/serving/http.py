"""The served model over HTTP: `sessionbert serve` (`make serve`), a small Starlette app around the pyfunc.

    sessionbert serve --port 5001 [--workers N] [--max-bytes 2000000] [--max-page-views 5000] [--seconds 10]

It answers MLflow's scoring protocol (`POST /invocations` with `dataframe_records` or
`dataframe_split`; `GET /ping`), so a client of `mlflow models serve` needs no change, and adds
what a server facing other teams needs: the body's size is checked from its Content-Length before
a byte is read (413), then while it streams; a body that is not JSON, nested, of the wrong types or
with more page views than allowed is refused before any model runs (400 or 413, a message in the
contract's terms); identifiers pass the landing folder's rules; one request runs at most `seconds`
(503 past it, the model stopping at its next stage); no response ever carries a stack trace (the
server log does). Each worker runs one prediction at a time on `cores / workers` torch threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionbert_core.config import SERVE_PREFIX, export, serve_settings
from sessionbert_core.serving.pyfunc import MAX_PAGE_VIEWS, RequestError, events_from_request, rows_from_payload

LOG = logging.getLogger("sessionbert.server")


@dataclass(frozen=True)
class Limits:
    """What one request may ask: body bytes, page views, seconds (queueing for the model included)."""

    max_bytes: int = 2_000_000
    max_page_views: int = MAX_PAGE_VIEWS
    seconds: float = 10.0

    def as_env(self) -> dict[str, str]:
        return {SERVE_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        given = serve_settings(env)
        return cls(**{f.name: type(getattr(cls, f.name))(given[f.name]) for f in fields(cls) if f.name in given})


def create_app(model_folder: Path, limits: Limits = Limits()) -> Starlette:
    """The app serving the MLflow model folder `model_folder` (`$SESSIONBERT_HOME/serving_model`)."""
    import mlflow

    _require_model(model_folder)
    model = mlflow.pyfunc.load_model(str(model_folder)).unwrap_python_model()
    lock = threading.Lock()

    def answer(rows, deadline: float) -> list[dict]:
        with lock:  # one prediction at a time: torch already uses every core it was given
            if time.monotonic() > deadline:
                raise TimeoutError("the request waited past its time limit for the model")
            return model.answer(events_from_request(rows), deadline).to_dicts()

    async def invocations(request: Request) -> Response:
        started = time.monotonic()
        body = await _body(request, limits.max_bytes)
        if isinstance(body, Response):
            return body
        try:
            payload = json.loads(body)
        except RecursionError:
            return _error(400, "the JSON is nested too deeply: a page view is one flat object")
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError
            return _error(400, f"the body is not JSON: {str(error)[:200]}")
        try:
            rows = rows_from_payload(payload, limits.max_page_views)
            left = limits.seconds - (time.monotonic() - started)
            predictions = await asyncio.wait_for(run_in_threadpool(answer, rows, started + limits.seconds), left)
        except RequestError as error:
            return _error(413 if error.too_large else 400, str(error))
        except TimeoutError:
            return _error(503, f"the request took longer than its limit of {limits.seconds:g} s: send fewer "
                               "page views, or retry when the server is less busy")
        return JSONResponse({"predictions": predictions})

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="text/plain")

    async def failed(request: Request, error: Exception) -> Response:
        LOG.exception("request failed", exc_info=error)  # the stack trace stays in the server log
        return _error(500, f"internal error ({type(error).__name__}); the server log has the details")

    routes = [Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping, methods=["GET"]),
              Route("/health", ping, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={Exception: failed})


async def _body(request: Request, max_bytes: int) -> bytes | Response:
    """The request's body, or the 400/413 that refuses it: Content-Type and Content-Length are read first."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:
        return _error(400, "no Content-Type: send the body as application/json")
    if media != "application/json":
        return _error(415, f"Content-Type {media[:100]} is not served: send application/json")
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        return _error(400, "Content-Length is not a number")
    if declared is not None and int(declared) > max_bytes:
        return _error(413, f"the body is {int(declared):,} bytes; at most {max_bytes:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return _error(413, f"the body is more than {max_bytes:,} bytes")
    return bytes(body)


def _require_model(model_folder: Path) -> None:
    if not (Path(model_folder) / "MLmodel").exists():
        raise ValueError(f"no served model at {model_folder}: run `make run` (it writes serving_model)")


def _error(status: int, message: str) -> JSONResponse:
    code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "BAD_REQUEST", 503: "TEMPORARILY_UNAVAILABLE"}
    return JSONResponse({"error_code": code.get(status, "INTERNAL_ERROR"), "message": message}, status_code=status)


def app_from_env() -> Starlette:
    """The app of one uvicorn worker, configured by `serve` through the environment."""
    import torch

    given = serve_settings()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(given.get("workers", "1"))))
    return create_app(Path(given["model"]), Limits.from_env())


def default_workers() -> int:
    """One worker per core, up to 4: on 2 cores two one-thread workers answered one client faster than
    one two-thread worker (46 against 59 ms at p50 for a new user's session) and eight clients faster
    still (README: Serving)."""
    return max(1, min(4, os.cpu_count() or 1))


def serve(model_folder: Path, host: str, port: int, workers: int | None = None, limits: Limits = Limits()) -> None:
    """Run the server until interrupted (uvicorn; `workers` processes, each loading the model)."""
    import uvicorn

    _require_model(model_folder)
    workers = workers or default_workers()
    export(limits.as_env() | {SERVE_PREFIX + "MODEL": str(model_folder), SERVE_PREFIX + "WORKERS": str(workers)})
    uvicorn.run("sessionbert_core.serving.http:app_from_env", factory=True, host=host, port=port, workers=workers,
                timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024, log_level="info")
