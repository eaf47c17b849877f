"""Reading a landing file to its end and within bounds: a gzip stream cut short or corrupt keeps what came
before and says where it stopped, a bomb stops at the file limit, a bad CSV record costs that record, a
blank file reads as no rows, and every message names the file and what to do."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess
import sys
import zlib

import polars as pl
import pytest

from sessionbert_core.config import ReadLimits, read_limits_from_env
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.ingest import IngestError, ParseCache, ReadOptions, discover

KEY = b"test-key"
HEADER = "user_id,session_id,timestamp,service,page\n"
MAPPING = "tables:\n  - files: clicks.csv\n    user: visitor\n    time: ts\n    url: href\n"


def _csv(users: range) -> str:
    return HEADER + "".join(f"u{i},s{i},2026-03-02T10:00:{i % 60:02d}Z,svc,home\n" for i in users)


def _jsonl(users: range) -> str:
    return "".join(json.dumps({"user_id": f"u{i}", "session_id": f"s{i}", "timestamp": "2026-03-02T10:00:00Z",
                               "service": "svc", "page": f"p{i}"}) + "\n" for i in users)


def _log(users: range) -> str:
    return "".join(f'10.0.0.{i} - - [02/Mar/2026:10:00:{i % 60:02d} +0000] "GET /docs/p{i} HTTP/1.1" 200 512 '
                   '"-" "Mozilla/5.0"\n' for i in users)


def _cloudtrail(users: range) -> str:
    records = [json.dumps({"eventTime": "2026-03-02T10:00:00Z", "eventSource": "s3.amazonaws.com",
                           "eventName": f"Call{i}", "eventID": f"id-{i}", "sessionCredentialFromConsole": "true",
                           "userIdentity": {"arn": f"arn:aws:iam::123456789012:user/u{i}"}}) for i in users]
    return '{"Records": [\n' + ",\n".join(records) + "\n]}\n"


def _cut_gzip(text: str, at: int) -> bytes:
    """A gzip stream of `text` cut after its first `at` characters, at a flush point (no error shows before the end)."""
    inflate = zlib.compressobj(wbits=31)
    return inflate.compress(text[:at].encode()) + inflate.flush(zlib.Z_SYNC_FLUSH)


def _conserved(result) -> None:
    for row in result.files.iter_rows(named=True):
        assert row["read"] == row["kept"] + row["quarantined"] + row["filtered"], row


def _file_rows(result) -> list[dict]:
    return result.quarantine.filter(pl.col("kind") == "file").select("source_file", "line", "reason", "detail",
                                                                      "raw").to_dicts()


# ----------------------------------------------------------------------------------------------
# compressed input verified to its end


@pytest.mark.parametrize(("name", "write", "kept"), [  # kept: the whole records in lines 1-5
    ("events.csv.gz", _csv, 4), ("events.jsonl.gz", _jsonl, 5), ("access.log.gz", _log, 5),
    ("AWSLogs-0001.json.gz", _cloudtrail, 4)])
@pytest.mark.parametrize("mid_line", [False, True])
def test_a_gzip_cut_short_is_quarantined_with_its_last_good_line(landing, name, write, kept, mid_line):
    text = write(range(10))
    lines = text.splitlines(keepends=True)
    at = len("".join(lines[:5])) + (7 if mid_line else 0)  # after line 5, or 7 characters into line 6
    result = ingest_landing(landing({name: _cut_gzip(text, at), "more.csv": _csv(range(50, 52))}), KEY)
    counts = {row["file"]: row["kept"] for row in result.files.iter_rows(named=True)}
    assert counts == {name: kept, "more.csv": 2}  # the other file read whole, this one up to the cut
    [cut] = _file_rows(result)
    assert cut["source_file"] == name and cut["reason"] == "file cut short" and cut["line"] == 6
    assert "line 5 is the last complete one" in cut["detail"] and "gzip stream ends early" in cut["detail"]
    if mid_line and name.startswith("events"):
        assert cut["raw"] == lines[5][:7]  # what there is of the cut line
    elif mid_line and name.startswith("AWS"):  # the cut record is CloudTrail's own truncated record
        assert result.quarantine.filter(pl.col("kind") != "file")["reason"].to_list() == ["truncated record"]
    _conserved(result)


def test_every_line_before_the_cut_is_kept(landing):
    text = _csv(range(100))
    result = ingest_landing(landing({"events.csv.gz": _cut_gzip(text, text.index("u60,"))}), KEY)
    assert sorted(result.events["user_id"]) == sorted(f"u{i}" for i in range(60))


def test_a_gzip_with_a_wrong_checksum_is_quarantined_as_corrupt(landing):
    whole = bytearray(gzip.compress(_jsonl(range(20)).encode()))
    whole[-8] ^= 0xFF  # the trailer's CRC-32
    result = ingest_landing(landing({"events.jsonl.gz": bytes(whole)}), KEY)
    assert result.events.height == 20  # every line came out before the trailer said the data is wrong
    [corrupt] = _file_rows(result)
    assert corrupt["reason"] == "file corrupt" and "line 20 is the last complete one" in corrupt["detail"]
    _conserved(result)


def test_a_gzip_cut_in_its_first_line_reads_as_no_rows_but_the_cut(landing):
    result = ingest_landing(landing({"events.csv.gz": _cut_gzip(_csv(range(3)), 9), "more.csv": _csv(range(2))}), KEY)
    assert _file_rows(result)[0]["detail"] == "the gzip stream ends early (no end-of-stream trailer) after 9 bytes " \
                                              "decompressed, in its first line"
    _conserved(result)


# ----------------------------------------------------------------------------------------------
# bounded memory: a limit per file and per line


def _bomb(line: bytes, members: int) -> bytes:
    """Gzip members of 8 MiB of `line` repeated, concatenated: `members` * 8 MiB from a few KiB."""
    return gzip.compress(line * ((8 << 20) // len(line))) * members


@pytest.mark.parametrize("line", [b"\n", b"x" * 4096, _jsonl(range(9, 10)).encode()])
def test_a_gzip_bomb_is_stopped_at_the_file_limit(landing, line):
    folder = landing({"bomb.jsonl.gz": _bomb(line, 8), "events.csv": _csv(range(3))})
    result = ingest_landing(folder, KEY, options=ReadOptions(limits=ReadLimits(file_bytes=1 << 20)))
    assert {"u0", "u1", "u2"} <= set(result.events["user_id"])  # the rest of the folder goes on
    [bomb] = _file_rows(result)
    assert bomb["reason"] == "file over the size limit"
    assert "more than 1 MiB decompressed" in bomb["detail"] and "SESSIONBERT_MAX_FILE_BYTES" in bomb["detail"]
    assert len(bomb["raw"] or "") <= 1 << 20  # at most a line of it is held, never the file
    _conserved(result)


def test_a_line_over_the_line_limit_costs_only_its_line(landing):
    content = _csv(range(2)) + "u9,s9,2026-03-02T10:00:00Z,svc," + "x" * 5000 + "\n" + _csv(range(2, 4))[len(HEADER):]
    result = ingest_landing(landing({"events.csv": content}), KEY,
                            options=ReadOptions(limits=ReadLimits(line_bytes=4096)))
    assert result.events["user_id"].to_list() == ["u0", "u1", "u2", "u3"]
    [row] = result.quarantine.to_dicts()
    assert (row["line"], row["kind"], row["reason"]) == (4, "event", "line over the size limit")
    assert "more than the 4 KiB a line may hold (SESSIONBERT_MAX_LINE_BYTES" in row["detail"]
    assert len(row["raw"]) == 1024


def test_the_limits_are_settings():
    assert read_limits_from_env({}) == ReadLimits(1 << 30, 1 << 20)
    assert read_limits_from_env({"SESSIONBERT_MAX_FILE_BYTES": "2GiB", "SESSIONBERT_MAX_LINE_BYTES": "65536"}) == \
        ReadLimits(2 << 30, 65536)
    with pytest.raises(ValueError, match="SESSIONBERT_MAX_LINE_BYTES must be a positive number of bytes"):
        read_limits_from_env({"SESSIONBERT_MAX_LINE_BYTES": "a lot"})


def test_the_limits_enter_the_cache_key(landing, tmp_path):
    f = discover(landing({"events.csv": _csv(range(2))}), KEY)[0]
    keys = {ParseCache(tmp_path, KEY, ReadOptions(limits=ReadLimits(file_bytes=size))).key(f, f.name, "digest")
            for size in (1 << 20, 1 << 30)}
    assert len(keys) == 2


BOMB_PEAK = """
import re, sys, pathlib
from sessionbert_core.config import read_limits_from_env
from sessionbert_core.data.ingest import LandingFile, ReadOptions, parse_file
path = pathlib.Path(sys.argv[1])
parsed = parse_file(LandingFile(path, "events", "bomb.jsonl.gz", form="jsonl"), "bomb.jsonl.gz", b"k",
                    ReadOptions(limits=read_limits_from_env()))  # as the asset reads them when a run starts
peak = re.search(r"VmHWM:\\s+(\\d+) kB", pathlib.Path("/proc/self/status").read_text())[1]  # this process's own
print(parsed.read, int(peak) // 1024)
"""


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="peak memory read from Linux's /proc")
@pytest.mark.parametrize("line", [b"x" * 4096, b"\n"])
def test_a_gzip_bomb_is_read_in_bounded_memory(tmp_path, line):
    """1 GiB from some 1 MiB, read to a limit of 512 MiB (SESSIONBERT_MAX_FILE_BYTES, read from the environment):
    a chunk and a line at a time are held, never the file (the process peaks at some 130 MiB, imports included)."""
    (tmp_path / "bomb.jsonl.gz").write_bytes(_bomb(line, 128))
    done = subprocess.run([sys.executable, "-c", BOMB_PEAK, str(tmp_path / "bomb.jsonl.gz")], capture_output=True,
                          text=True, check=True, env={**os.environ, "SESSIONBERT_MAX_FILE_BYTES": "512MiB"})
    read, peak_mib = map(int, done.stdout.split())
    assert read == (1 if line.startswith(b"x") else (512 << 20) + 1)  # the line it stopped in, and blank ones
    assert peak_mib < 400, f"peak RSS {peak_mib} MiB"


# ----------------------------------------------------------------------------------------------
# one bad CSV record costs that record; a blank file reads as no rows


def test_a_stray_quote_costs_only_its_record(landing):
    lines = _csv(range(4)).splitlines()
    lines[2] = lines[2].replace("home", 'ho"me')  # two stray quotes on two lines: once read as one record
    lines[3] = lines[3].replace("svc", 's"vc')
    result = ingest_landing(landing({"events.csv": "\n".join(lines) + "\n"}), KEY)
    assert result.events["user_id"].to_list() == ["u0", "u3"]
    assert result.quarantine.select("line", "reason").rows() == [(3, "stray quote"), (4, "stray quote")]
    _conserved(result)


def test_a_lone_carriage_return_costs_only_its_record(landing):
    content = _csv(range(3)).replace("u1,s1,", "u1,s\r1,")
    result = ingest_landing(landing({"events.csv": content}), KEY)
    assert result.events["user_id"].to_list() == ["u0", "u2"]
    [row] = result.quarantine.to_dicts()
    assert row["reason"] == "unparseable CSV record" and "carriage return (\\r)" in row["detail"]
    assert "universal-newline" not in row["detail"]


@pytest.mark.parametrize("files", [
    {"blank.csv": "\n\n  \n"}, {"blank.jsonl.gz": gzip.compress(b"\n\r\n\t\n")}, {"blank.log": "\n\n"},
    {"billing-blank.csv": "\n \n"}, {"clicks.csv": "\n\n", "landing.yaml": MAPPING}])
def test_a_blank_lines_only_file_reads_as_no_rows(landing, files):
    result = ingest_landing(landing({**files, "events.csv": _csv(range(2))}), KEY)
    assert result.events.height == 2 and result.quarantine.height == 0
    blank = result.files.filter(pl.col("file") != "events.csv").row(0, named=True)
    assert blank["kept"] == blank["quarantined"] == 0 and blank["read"] == blank["filtered"] > 0
    _conserved(result)


# ----------------------------------------------------------------------------------------------
# messages a person can act on


def test_utf16_file_is_named_as_utf16(landing):
    folder = landing({"events.csv": _csv(range(2)).encode("utf-16"), "more.csv": _csv(range(5, 7)).encode("utf-16-le")})
    with pytest.raises(IngestError, match=r"more\.csv: looks like UTF-16 text without a byte-order mark"):
        ingest_landing(folder, KEY)
    result = ingest_landing(folder, KEY, unreadable="quarantine")
    assert result.events["user_id"].to_list() == ["u0", "u1"]  # with its byte-order mark, UTF-16 is read
    assert "UTF-16" in _file_rows(result)[0]["detail"]


def test_latin1_bytes_are_named_as_a_latin1_guess(landing):
    latin1 = "u9,s9,2026-03-02T10:00:00Z,svc,café\n".encode("latin-1")
    folder = landing({"events.csv": _csv(range(2)).encode() + latin1})
    [row] = ingest_landing(folder, KEY).quarantine.to_dicts()
    assert row["reason"] == "invalid UTF-8 in page" and "Latin-1 guessed" in row["detail"] and "café" in row["detail"]


def test_an_unreadable_file_is_named_in_the_last_line(landing, monkeypatch):
    folder = landing({"events.csv": _csv(range(2)), "secret.csv": _csv(range(5, 7))})
    opened = pathlib.Path.open

    def refused(self, *args, **kwargs):  # what a file without read permission does (the tests may run as root)
        if self.name == "secret.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refused)
    with pytest.raises(IngestError) as error:
        ingest_landing(folder, KEY)
    assert str(error.value) == "secret.csv: cannot be read: Permission denied"
    result = ingest_landing(folder, KEY, unreadable="quarantine")
    assert result.events.height == 2 and _file_rows(result)[0]["source_file"] == "secret.csv"
