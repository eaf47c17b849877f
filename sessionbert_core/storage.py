"""Atomic artifact writes: a reader never sees a half-written Parquet, JSON or folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl


def _temp_beside(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    tmp = _temp_beside(path)
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True, row_group_size=ROW_GROUP)
        if path.is_dir():  # a table that was written in parts before
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(data: Any, path: Path) -> Path:
    return write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", path)


def write_text(text: str, path: Path) -> Path:
    tmp = _temp_beside(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_folder(staging: Path, target: Path) -> Path:
    """Swap a fully written staging folder into place (old one removed after the swap)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def staging_folder(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))


def save_pretrained(target: Path, *saved: Any, records: dict[str, Any] | None = None) -> Path:
    """`save_pretrained` of each of `saved` (a model, its tokenizer) and the JSON `records` into a staging
    folder, then swapped in: readers never see half a model."""
    staging = staging_folder(target)
    for item in saved:
        item.save_pretrained(staging)
    for name, record in (records or {}).items():
        write_json(record, staging / name)
    return replace_folder(staging, target)


@dataclass(frozen=True)
class Parts:
    """A table written as a folder of Parquet parts (`part-00000.parquet`, ...) that read in name order give
    the whole table: each part is written and read alone, so memory holds one part, not the table."""

    folder: Path
    rows: int


class PartsWriter:
    """Parts written one at a time into a staging folder, swapped in whole by `commit`; as a context manager,
    a staging folder left uncommitted (the step failed) is removed, and the table before it stays."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self.staging = staging_folder(self.target)
        self.rows = 0
        self.count = 0

    def __enter__(self) -> PartsWriter:
        return self

    def __exit__(self, *_) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def write(self, frame: pl.DataFrame, name: str = "") -> None:
        """One more part: `name` (sorted among the others' names) or the next number."""
        frame.write_parquet(self.staging / f"{name or f'part-{self.count:05d}'}.parquet", compression="zstd",
                            statistics=True, row_group_size=ROW_GROUP)
        self.rows += frame.height
        self.count += 1

    def commit(self, schema: dict | None = None) -> Parts:
        if not self.count:  # an empty table still reads back with its columns
            self.write(pl.DataFrame(schema=schema or {}))
        if self.target.is_file():  # a table that was one file before
            self.target.unlink()
        replace_folder(self.staging, self.target)
        return Parts(self.target, self.rows)


ROW_GROUP = 16_384  # rows per row group of a part: a read of a range of users skips the other groups


def write_day(frame: pl.DataFrame, folder: Path, day: date) -> Path:
    """One day of a table kept by day (`folder/<day>.parquet`, replaced atomically), sorted by user so a read of
    a range of users skips the rest. A folder of another layout (a table in parts of users, or one file) goes."""
    folder = Path(folder)
    if folder.is_file():
        folder.unlink()
    for stale in part_paths(folder) if folder.is_dir() else []:
        if not _is_day(stale.stem):
            stale.unlink()
    return write_parquet(frame, folder / f"{day.isoformat()}.parquet")


def _is_day(name: str) -> bool:
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return len(name) == 10


def day_paths(folder: Path, days: list[date] | None = None) -> list[Path]:
    """The day files of a table kept by day (only `days`, where given), in order."""
    paths = [path for path in part_paths(folder) if _is_day(path.stem)] if Path(folder).is_dir() else []
    if days is not None:
        wanted = {day.isoformat() for day in days}
        paths = [path for path in paths if path.stem in wanted]
    return paths


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def part_paths(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*.parquet"))


def scan_table(path: Path | list[Path], schema: dict | None = None) -> pl.LazyFrame:
    """A table written as one Parquet file or as parts (or the parts listed), lazily, parts in order; given its
    `schema`, no part at all (a table by day before its first day) is an empty table."""
    if isinstance(path, list):
        paths = path
    else:
        paths = part_paths(path) if Path(path).is_dir() else [path] if Path(path).exists() or schema is None else []
    return pl.LazyFrame(schema=schema) if not paths and schema is not None else pl.scan_parquet(paths)


def read_table(path: Path | list[Path], schema: dict | None = None) -> pl.DataFrame:
    return scan_table(path, schema).collect()
