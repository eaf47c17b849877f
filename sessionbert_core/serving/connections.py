"""The server's HTTP/1.1 connections: uvicorn's h11 protocol with time limits on a request's head and body."""

from __future__ import annotations

import asyncio
import json
from functools import cache

from uvicorn.protocols.http.h11_impl import H11Protocol

from sessionbert_core.config import serve_settings

HEADER_SECONDS = 10.0  # from a connection's opening (or the first byte after an answer) to the end of a head
BODY_SECONDS = 20.0  # from the end of the head to the end of the body: 2 MB at 100 KB/s
LINGER_SECONDS = 2.0  # a timed-out connection reads and drops what still comes, so the client gets the 408


@cache
def time_limits() -> tuple[float, float]:
    """(header_seconds, body_seconds) of this worker (SESSIONBERT_SERVE_*, written by `serve`)."""
    given = serve_settings()
    return float(given.get("header_seconds", HEADER_SECONDS)), float(given.get("body_seconds", BODY_SECONDS))


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (whose heads are capped at `h11_max_incomplete_event_size` bytes), where a
    request's head must also arrive within `header_seconds` of the connection opening or of the first byte
    after the previous answer, and its body within `body_seconds` of the head: a client sending either a
    byte at a time gets a 408 and the connection closes. Bytes trickling in after an answer (a body the
    app did not read) count as a head, so they cannot hold the connection either. uvicorn has no such
    limits: its keep-alive timer stops at any byte, and a body is awaited for ever."""

    timer: asyncio.TimerHandle | None = None  # the head's or the body's, whichever is awaited
    timer_for = "head"
    lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time("head", time_limits()[0])

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.timer is None and (self.cycle is None or self.cycle.response_complete):  # between requests
            self._time("head", time_limits()[0])
        super().data_received(data)

    def handle_events(self) -> None:
        answering = self.cycle
        super().handle_events()
        if self.cycle is not answering:  # a whole head arrived: the app has the request, its body comes next
            self._stop_timer()
            self._time("body", time_limits()[1])
        body_done = self.cycle is not None and (not self.cycle.more_body or self.cycle.response_started)
        if body_done and self.timer_for == "body":
            self._stop_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _time(self, part: str, seconds: float) -> None:
        if self.timer is None:
            self.timer_for = part
            self.timer = self.loop.call_later(seconds, self._too_slow, part, seconds)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self, part: str, seconds: float) -> None:
        self.timer = None
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.transport.is_closing() or (answering and self.cycle.response_started):
            return  # the app answered without waiting for the body
        if answering:  # the app waits for the body: it gets a disconnect instead
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        body = json.dumps({"error_code": "REQUEST_TIMEOUT",
                           "message": f"the request's {part} did not arrive within {seconds:g} s"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        # closing a socket with unread bytes resets the connection, and the client may lose the 408 with it:
        # send the end of the answer, drop what still comes, close when the client does (or after a moment)
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
