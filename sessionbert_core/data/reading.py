"""Reading one landing file's content: decompressed in bounded chunks, verified to its end, split in lines.

Every format reads its bytes here, so each fault gets one answer. A gzip stream is read to its trailer
(length and CRC checked; concatenated members and zero padding allowed). One that ends early, turns
corrupt part-way, or passes the per-file limit (`ReadLimits`) stops the reading: what came before is
kept, and the line being read comes out as a last line whose reason is one of FILE_REASONS (a quarantine
row of kind `file`) and whose detail names the last complete line. A line past the per-line limit is
skipped to its end, never held whole, and quarantined alone. A UTF-16 file with its byte-order mark is
read as UTF-8 text; a UTF-8 byte-order mark is dropped; one without a mark is refused, named.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sessionbert_core.config import ReadLimits
from sessionbert_core.errors import IngestError

GZIP_MAGIC = b"\x1f\x8b"
BLOCK = 1 << 16  # compressed bytes read at a time
CHUNK = 1 << 20  # the most decompressed bytes held at a time
PREVIEW = 1024  # bytes of an over-long line kept as its raw record
CUT_SHORT, CORRUPT, TOO_BIG = "file cut short", "file corrupt", "file over the size limit"
FILE_REASONS = (CUT_SHORT, CORRUPT, TOO_BIG)  # the reasons of a file's own quarantine row (kind `file`)
LINE_TOO_LONG = "line over the size limit"
MARKS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


class Line(NamedTuple):  # a tuple: millions are made
    number: int  # physical line, from 1, blank lines counted
    data: bytes  # without its line break (nor a \r before it)
    reason: str | None = None  # LINE_TOO_LONG, or one of FILE_REASONS for the line reading stopped in
    detail: str | None = None


class _Damage(Exception):
    def __init__(self, reason: str, what: str):
        super().__init__(what)
        self.reason, self.what = reason, what


class FileReader:
    """One file's content, read once: `read()` its bytes or `lines()` its non-blank lines. After either,
    `damage` is (reason, what happened) where reading stopped before a verified end, else None; `blank`
    counts the blank lines `lines()` skipped."""

    def __init__(self, path: Path, name: str, limits: ReadLimits | None = None):
        self.path, self.name, self.limits = path, name, limits or ReadLimits()
        self.damage: tuple[str, str] | None = None
        self.size = self.blank = 0

    def chunks(self) -> Iterator[bytes]:
        """The content as UTF-8 bytes (gzip decompressed, UTF-16 decoded), up to the file limit."""
        try:
            handle = self.path.open("rb")
        except OSError as error:
            raise IngestError(f"{self.name}: cannot be read: {error.strerror or error}") from None
        with handle:
            gzipped = handle.read(2) == GZIP_MAGIC
            handle.seek(0)
            try:
                yield from self._text(self._bounded(_inflated(handle) if gzipped else
                                                    iter(lambda: handle.read(CHUNK), b""), gzipped))
            except _Damage as damage:
                if not self.size:  # nothing came out: nothing to keep
                    raise IngestError(f"{self.name}: cannot be decompressed: {damage.what}") from None
                self.damage = (damage.reason, damage.what if damage.reason == TOO_BIG else
                               f"{damage.what} after {self.size:,} bytes decompressed")

    def read(self, most: int | None = None) -> bytes:
        """The content (its first `most` bytes) in one piece."""
        out, size, chunks = [], 0, self.chunks()
        for chunk in chunks:
            out.append(chunk)
            size += len(chunk)
            if most is not None and size >= most:
                chunks.close()
                break
        return b"".join(out)[:most]

    def lines(self) -> Iterator[Line]:
        """The non-blank lines (blank ones, whitespace only, counted in `blank`); a line past the line limit
        as LINE_TOO_LONG with its first PREVIEW bytes; where reading stopped early, a last line with the
        damage's reason holding what there is of the line it stopped in (`cut_line`)."""
        limit, number, tail, long = self.limits.line_bytes, 0, b"", None  # long: [size, preview] being skipped
        for chunk in self.chunks():
            if long is not None:
                end = chunk.find(b"\n")
                if end < 0:
                    long[0] += len(chunk)
                    continue
                number += 1
                yield self._too_long(number, long[0] + end, long[1])
                long, chunk = None, chunk[end + 1:]
            data = tail + chunk
            if _blank(data):  # blank lines only: counted at memory speed (a file of them)
                breaks = data.count(b"\n")
                number, self.blank, tail = number + breaks, self.blank + breaks, data[data.rfind(b"\n") + 1:]
            else:
                pieces = data.split(b"\n")
                tail = pieces.pop()
                for piece in pieces:
                    number += 1
                    if not piece or piece.isspace():
                        self.blank += 1
                    elif len(piece) > limit:
                        yield self._too_long(number, len(piece), piece[:PREVIEW])
                    else:
                        yield Line(number, piece.removesuffix(b"\r"))
            if len(tail) > limit:
                long, tail = [len(tail), tail[:PREVIEW]], b""
        if self.damage is not None:
            yield self.cut_line(number, long[1] if long else tail)
        elif long is not None:
            yield self._too_long(number + 1, long[0], long[1])
        elif not _blank(tail):
            yield Line(number + 1, tail.removesuffix(b"\r"))
        elif tail:
            self.blank += 1

    def cut_line(self, complete: int, rest: bytes = b"") -> Line:
        """The line reading stopped in (`rest`: what there is of it), after `complete` whole lines."""
        reason, what = self.damage
        kept = (f"; line {complete} is the last complete one: it and those before it are kept" if complete
                else ", in its first line")
        return Line(complete + 1, rest, reason, what + kept)

    def _too_long(self, number: int, size: int, preview: bytes) -> Line:
        return Line(number, preview, LINE_TOO_LONG,
                    f"a line of {size:,} bytes, more than the {in_words(self.limits.line_bytes)} a line may hold "
                    f"(SESSIONBERT_MAX_LINE_BYTES sets it); its first {PREVIEW:,} bytes are the raw record")

    def _bounded(self, chunks: Iterator[bytes], gzipped: bool) -> Iterator[bytes]:
        limit = self.limits.file_bytes
        for chunk in chunks:
            if self.size + len(chunk) > limit:
                chunk, self.size = chunk[: limit - self.size], limit
                yield chunk
                raise _Damage(TOO_BIG, f"more than {in_words(limit)}{' decompressed' if gzipped else ''}, the "
                                       "most a file may hold (SESSIONBERT_MAX_FILE_BYTES sets it)")
            self.size += len(chunk)
            yield chunk

    def _text(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """UTF-8 text: a byte-order mark dropped (UTF-16 decoded by it); UTF-16 without one refused."""
        first = next(chunks, b"")
        mark, codec = next((m for m in MARKS if first.startswith(m[0])), (b"", "utf-8"))
        if not mark and _looks_utf16(first):
            raise IngestError(f"{self.name}: looks like UTF-16 text without a byte-order mark; save it as UTF-8 "
                              "(or as UTF-16 with its byte-order mark)")
        if codec == "utf-8":
            yield first[len(mark):]
            yield from chunks
            return
        decoder = codecs.getincrementaldecoder(codec)("replace")  # invalid UTF-16 is quarantined as U+FFFD
        yield decoder.decode(first[len(mark):]).encode("utf-8")
        for chunk in chunks:
            yield decoder.decode(chunk).encode("utf-8")
        yield decoder.decode(b"", final=True).encode("utf-8")


def _inflated(handle) -> Iterator[bytes]:
    """A gzip file's members decompressed, CHUNK bytes at most at a time; _Damage where the data is corrupt or
    ends inside a member (before its trailer)."""
    inflate, started = zlib.decompressobj(wbits=31), False
    while block := handle.read(BLOCK):
        data = block
        while data or started:
            if not started:
                data = data.lstrip(b"\0")  # zero padding after a member, as gzip allows
                if not data:
                    break
                started = True
            before = inflate.copy()
            try:
                out = inflate.decompress(data, CHUNK)
            except zlib.error as error:  # what this call decompressed is lost with it: again, a byte at a time
                yield from _salvaged(before, data)
                raise _Damage(CORRUPT, f"the gzip data is corrupt ({str(error).rsplit(': ', 1)[-1]})") from None
            if out:
                yield out
            data = inflate.unconsumed_tail
            if inflate.eof:  # a member ends: another may follow (concatenated gzip files)
                data, inflate, started = inflate.unused_data, zlib.decompressobj(wbits=31), False
            elif not data and len(out) < CHUNK:
                break
    if started:
        raise _Damage(CUT_SHORT, "the gzip stream ends early (no end-of-stream trailer)")


def _salvaged(inflate, data: bytes) -> Iterator[bytes]:
    """What `data` decompresses to before the byte where it turns corrupt (a wrong checksum: all of it)."""
    out = bytearray()
    for at in range(len(data)):
        try:
            out += inflate.decompress(data[at:at + 1])
        except zlib.error:
            break
        if len(out) >= CHUNK:
            yield bytes(out)
            out.clear()
    yield bytes(out)


def _blank(data: bytes) -> bool:
    """Nothing but ASCII whitespace (spaces, tabs, line breaks), or nothing at all."""
    return not data or data.isspace()


def _looks_utf16(data: bytes) -> bool:
    """Text in UTF-16 without a mark: NUL bytes in every other place (the high byte of ASCII letters)."""
    sample = data[:4096]
    nuls = sorted((sample[0::2].count(0), sample[1::2].count(0)))
    return len(sample) >= 16 and nuls[1] > 0.45 * len(sample) and nuls[0] < 0.05 * len(sample)


def decoded(data: bytes, quote: bool = True) -> tuple[str, str | None, str | None]:
    """A line as text (invalid bytes as U+FFFD, which validation quarantines); where it is not UTF-8, also the
    untouched bytes as text with backslash escapes (for the raw record) and what they look like (`quote`:
    with the text around the first bad byte read as Latin-1)."""
    try:
        return data.decode("utf-8"), None, None
    except UnicodeDecodeError as error:
        around = data[max(error.start - 20, 0): error.start + 20].decode("latin-1")
        note = f"not UTF-8 (\\x{data[error.start]:02x} at byte {error.start + 1}); Latin-1 guessed" + (
            f": {around!r}" if quote else "")
        return data.decode("utf-8", "replace"), data.decode("utf-8", "backslashreplace"), note


def in_words(size: int) -> str:
    """A size as people say it: 1 GiB, 512 MiB, 1,000 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):,.3g} {unit}"
    return f"{size:,} bytes"
