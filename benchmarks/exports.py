"""What reading an export costs: a world's page views rendered in each format and ingested, per format.

    python -m benchmarks.exports --profile small            # the small world: about 470,000 page views

For each format (sessionbert_core.world.exports): the file's size, the seconds ingestion takes (the
median of --repeats runs, no parse cache), page views per second, and what came back against the
world's own event files (page views, users, sessions). Prints a table; writes
benchmarks/results/exports-<profile>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.perf import machine
from sessionbert_core.config import get_profile
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.world.exports import FORMATS, render
from sessionbert_core.world.simulate import generate_world

RESULTS = Path(__file__).resolve().parent / "results"
KEY = b"benchmark-key"


def timed_ingest(folder: Path, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = ingest_landing(folder, KEY)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def measure(landing: Path, work: Path, repeats: int) -> dict:
    seconds, world = timed_ingest(landing, repeats)
    out = {"world_files": {"seconds": round(seconds, 2), "page_views": world.events.height,
                           "users": world.events["user_id"].n_unique(),
                           "sessions": world.events.select("user_id", "session_id").n_unique()}}
    for fmt in FORMATS:
        folder = render(landing, work / fmt, fmt)
        seconds, back = timed_ingest(folder, repeats)
        events = back.events
        out[fmt] = {"mib": round((folder / "export-1").stat().st_size / 2**20, 1), "seconds": round(seconds, 2),
                    "page_views_per_second": round(events.height / seconds), "page_views": events.height,
                    "users": events["user_id"].n_unique(),
                    "sessions": events.select("user_id", "session_id").n_unique(),
                    "quarantined": back.quarantine.height}
        print(f"  {fmt}: {out[fmt]}", flush=True)
    return out


def table(result: dict) -> str:
    rows = [("format", "MiB", "seconds", "page views/s", "page views", "users", "sessions")]
    for name, r in result["formats"].items():
        rows.append((name, str(r.get("mib", "-")), f"{r['seconds']:.2f}", f"{r.get('page_views_per_second', 0):,}",
                     f"{r['page_views']:,}", f"{r['users']:,}", f"{r['sessions']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        world = generate_world(work / "world", get_profile(args.profile).world, args.seed)
        result = {"profile": args.profile, "seed": args.seed, "machine": machine(), "repeats": args.repeats,
                  "formats": measure(world.landing, work / "exports", args.repeats)}
    print()
    print(table(result))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"exports-{args.profile}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
