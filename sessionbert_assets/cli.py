"""`sessionbert run` materializes the main job and prints a summary; `sessionbert recommend USER` looks one user up."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date

import dagster as dg

from sessionbert_assets.instance import prepare
from sessionbert_assets.metadata import duration
from sessionbert_assets.partitions import DAY_ASSETS, execute_over_files, upstream_needed
from sessionbert_core.config import settings_from_env
from sessionbert_core.data.ingest import EXPORT_KINDS
from sessionbert_core.evaluation.choice import PEERS

# figures worth a line in the summary, per asset (all of them are in the UI)
SUMMARY_KEYS = {
    "landing_folder": ("folder", "world/users", "world/sessions", "world/events",
                       *(f"files/{kind}" for kind in ("events", *EXPORT_KINDS, "access_log", "billing", "ignored"))),
    "quarantined_events": ("headline", "date_range", "days", "rows_filtered", "rows", "share_of_rows_read",
                           "billing_rows"),
    "session_splits": ("sessions", "users", "mean_words_per_session"),
    "next_activity_baselines": ("headline", "n_sessions"),
    "next_activity_peers": tuple(f"{peer}/{figure}" for peer in PEERS
                                 for figure in ("seconds", "test_service_accuracy")),
    "tokenizer": ("kind", "vocabulary_size", "unknown_token_rate", "mean_tokens_per_session"),
    "pretrained_model": ("precision", "encoder", "parameters", "epochs", "training_time", "best_validation_loss",
                         "useful_tokens_per_second", "mlflow_run_id"),
    "finetuned_model": ("precision", "epochs", "training_time", "best_validation_loss", "useful_tokens_per_second",
                        "registered_model", "mlflow_run_id"),
    "model_evaluation": ("headline", "n_sessions", "service/served", "page/served"),
    "session_embeddings": ("sessions", "pooling", "sessions_per_second"),
    "cluster_sweep": ("headline", "users", "sample_users", "baseline_users"),
    "persona_mapping": ("not_enough_signal", "personas"),
    "persona_evaluation": ("headline", "nmi"),
    "ranker_selection": ("ranker", "reason"),
    "recommendation_table": ("users", "users_recommended", "ranker", "ranker_reason"),
    "serving_model": ("registered_model", "serve"),
    "hit_at_k_evaluation": ("headline", "persona_fit/true"),
}


def _value(entry: dg.MetadataValue) -> str:
    if isinstance(entry, dg.MarkdownMetadataValue):  # a headline's lines
        return entry.md_str.replace("  \n", "\n")
    value = getattr(entry, "value", entry)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or value.is_integer():  # counts: 1,609, not 1609 or 3.0000
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"  # 1,883.7 and 34.87, 0.9118


def _precision_line(events: list[dg.DagsterEvent]) -> str:
    """`precision fp32 (why)`: what the models ran in, from the first asset that ran one."""
    for event in events:
        metadata = event.event_specific_data.materialization.metadata
        if "precision" in metadata and "precision_reason" in metadata:
            return f"precision {_value(metadata['precision'])} ({_value(metadata['precision_reason'])})"
    return "precision: no model ran in this selection"


def _selected_keys(defs: dg.Definitions, selection: str) -> list[dg.AssetKey]:
    """The named assets, plus what is computed together with them (the outputs of one multi-asset)."""
    graph = defs.resolve_asset_graph()
    known = {key.to_user_string(): key for key in graph.get_all_asset_keys()}
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown asset(s) {', '.join(unknown)}; the assets are: {', '.join(sorted(known))}")
    keys = {key for name in names for key in graph.get(known[name]).assets_def.keys}
    return sorted(keys, key=lambda key: key.to_user_string())


def upstream_line(selected: list[dg.AssetKey], added: list[dg.AssetKey]) -> str:
    """One line on why `added` runs first: `raw_sessions needs the days of the landing files: reading them first
    (landing_files)`."""
    names = [key.to_user_string() for key in selected if key.path[-1] in (*DAY_ASSETS, "landing_files")]
    reads = dg.AssetKey("landing_files") in added
    what = "the days of the landing files" if reads else "the files of the landing folder registered"
    doing = {2: "listing and reading them", 1: "reading them" if reads else "listing them"}[len(added)]
    return (f"{', '.join(names)} {'need' if len(names) > 1 else 'needs'} {what}: {doing} first "
            f"({', '.join(key.to_user_string() for key in added)})")


def absent_line(selected: list[dg.AssetKey], results: list[dg.ExecuteInProcessResult]) -> str | None:
    """The selected assets that no run materialized (a partitioned one: not one partition), or None when none is
    absent: `run` says `succeeded` only when every selected asset is there."""
    materialized = {e.asset_key for r in results for e in r.get_asset_materialization_events()}
    absent = [key.to_user_string() for key in selected if key not in materialized]
    if not absent:
        return None
    by_day = [name for name in absent if name in DAY_ASSETS]
    why = (" (no day was found in the landing files: are there page views in the landing folder? --days "
           "FIRST:LAST names the days)" if by_day else "")
    return f"selected but not materialized: {', '.join(absent)}{why}"


def day_range(text: str) -> tuple[date, date]:
    """`2026-03-02` or `2026-03-02:2026-03-08` as (first, last)."""
    first, _, last = text.partition(":")
    try:
        days = date.fromisoformat(first.strip()), date.fromisoformat((last or first).strip())
    except ValueError:
        raise ValueError(f"--days takes a day or a range of days (2026-03-02 or 2026-03-02:2026-03-08), not "
                         f"{text!r}") from None
    if days[1] < days[0]:
        raise ValueError(f"--days {text}: the last day is before the first")
    return days


# what the quiet summary shows of today's run (every figure stays in the UI, and `--verbose` prints them)
HEADLINES = ("model_evaluation", "persona_evaluation", "hit_at_k_evaluation")


# MLflow's warnings on saving the recommender, the same on every run: it is pickled as an instance of a class of this
# installed package (the pickle holds no code of it; models-from-code would take its place), and it has no signature
# on purpose (it checks requests itself, so optional columns stay optional)
KNOWN_PYFUNC = ("Passing a Python object as `python_model`", "Failed to infer model signature")


def quiet_third_parties() -> None:
    """What `sessionbert run` keeps off the terminal without `--verbose`, each harmless here:
    Dagster's Beta and Preview warnings name APIs chosen on purpose (declarative automation, pools, Pipes),
    the same on every run; MLflow's artifact download bars are the copies a run makes of its own files, and its
    INFO lines the set-up of its own SQLite tables; transformers' notes below an error are that the MLM decoder's
    weights are missing from a checkpoint (they are the word embeddings, tied: saved once, tied again on load)
    and that no layer was sharded (nothing is: one process, or DDP's whole copies). Errors still print."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    from sessionbert_core.config import export

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").addFilter(lambda record: not record.getMessage().startswith(KNOWN_PYFUNC))
    transformers_logging.set_verbosity_error()
    export({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})


def run(selection: str | None, days: str | None = None, verbose: bool = False) -> int:
    from sessionbert_assets.progress import quiet_run_config

    settings = settings_from_env()
    prepare(settings.home)
    if not verbose:
        quiet_third_parties()
    from sessionbert_assets.definitions import build_definitions  # after DAGSTER_HOME is set

    defs = build_definitions()  # from the environment now, not as it was when the module was first imported
    jobs = {"main": defs.resolve_job_def("sessionbert_main"), "files": defs.resolve_job_def("read_new_files")}
    keys = _selected_keys(defs, selection) if selection else sorted(defs.resolve_asset_graph().get_all_asset_keys())
    cache, days_asked = settings.home / "ingest_cache", day_range(days) if days else None
    log_file = settings.home / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        if added := upstream_needed(keys, instance, cache, days_asked):
            print(upstream_line(keys, added))
        # landing_folder first (it registers the files), then the files, then the rest over the days they hold
        results = execute_over_files(jobs, instance, [*added, *keys], cache, days=days_asked,
                                     run_config=None if verbose else quiet_run_config(log_file))
        ran = all(r.success for r in results)  # the runs stop at the first that fails
        absent = absent_line(keys, results) if ran else None
        elapsed = time.perf_counter() - started
        print(f"\nSessionBERT run {', '.join(r.run_id[:8] for r in results) or '(none)'} on source={settings.source} "
              f"profile={settings.profile}: {'succeeded' if ran and not absent else 'FAILED'} in "
              f"{duration(elapsed).value}")
        print(f"artifacts: {settings.home}   Dagster instance: {settings_from_env().dagster_home}")
        if not verbose:
            print(f"every event of the run: {log_file}")
        materializations = [e for r in results for e in r.get_asset_materialization_events()]
        print(_precision_line(materializations) + "\n")
        checks = [c for r in results for c in r.get_asset_check_evaluations()]
        (_full_summary if verbose else _short_summary)(materializations, checks)
        if absent:
            print(f"\n{absent}", file=sys.stderr)
            return 1
        if not ran:
            for event in results[-1].all_events:
                if event.is_step_failure and event.step_failure_data.error:
                    print(f"\nstep {event.step_key} failed: {event.step_failure_data.error.message.strip()}",
                          file=sys.stderr)
            return 1
    print("\nBrowse the runs and every asset's metadata with `make ui`; `sessionbert run --verbose` prints them here.")
    return 0


def _short_summary(materializations: list[dg.DagsterEvent], checks: list) -> None:
    """Today's headlines (what serves, the personas, the recommendations) and the quality gates in one line."""
    for event in materializations:
        materialization = event.event_specific_data.materialization
        name, metadata = materialization.asset_key.to_user_string(), materialization.metadata
        if event.partition is None and name in HEADLINES and "headline" in metadata:
            print(f"  {name}\n      " + _value(metadata["headline"]).replace("\n", "\n      "))
    failed = [c for c in checks if not c.passed]
    print(f"\n  quality gates: {len(checks) - len(failed)} of {len(checks)} passed")
    for check in failed:
        print(f"      FAILED  {check.asset_key.to_user_string()}:{check.check_name}: "
              f"{_value(check.metadata.get('reasons', check.metadata.get('compared', '')))}")


def _full_summary(materializations: list[dg.DagsterEvent], checks: list) -> None:
    """Every asset's summary figures (SUMMARY_KEYS) and every gate."""
    for name, unit in (("landing_files", "file(s), each read alone"), ("raw_sessions", "day(s), each combined "
                                                                                      "alone")):
        partitions = [e for e in materializations if e.partition is not None and e.asset_key.path[-1] == name]
        if partitions:
            print(f"  {name}\n      {'partitions':<28} {len(partitions):,} {unit}")
    for event in materializations:
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        if event.partition is not None:
            continue
        print(f"  {name}")
        if "path" in metadata:
            print(f"      {'path':<28} {_value(metadata['path'])}")
        for key in SUMMARY_KEYS.get(name, ()):
            if key in metadata:
                print(f"      {key:<28} " + _value(metadata[key]).replace("\n", "\n" + " " * 35))
    if checks:
        print("\n  quality gates")
        for check in checks:
            print(f"      {'passed' if check.passed else 'FAILED':<7} {check.asset_key.to_user_string()}:"
                  f"{check.check_name}")
            if not check.passed:
                print(f"              {', '.join(f'{k}: {_value(v)}' for k, v in check.metadata.items())}")


def recommend(user_id: str) -> int:
    """Print one user's new-service recommendations and persona from the materialized artifacts."""
    import polars as pl

    from sessionbert_core.recommend.ranking import lookup

    home = settings_from_env().home
    path = home / "recommendation_table.parquet"
    if not path.exists():
        raise ValueError(f"no recommendation table at {path}: run `make run` (or materialize recommendation_table)")
    try:
        rows = lookup(pl.read_parquet(path), user_id)
    except KeyError as error:
        raise ValueError(error.args[0]) from error
    first = rows.row(0, named=True)
    print(f"user {user_id}   persona: {first['persona'] or '-'}   model version: {first['model_version']}"
          f"   generated: {first['generated_at']:%Y-%m-%d %H:%M} UTC")
    print(f"  {'rank':<5} {'service':<24} {'score':>7}  landing page")
    for row in rows.iter_rows(named=True):
        print(f"  {row['rank']:<5} {row['service']:<24} {row['score']:>7.3f}  {row['page'] or '-'}")
    return 0


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from sessionbert_core.serving.http import Limits

    limits = Limits()
    parser.add_argument("--model", help="an MLflow model folder (default: $SESSIONBERT_HOME/serving_model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, help="processes, each with the model and cores/workers torch "
                        "threads (default: one per core, up to 4; docs/serving.md)")
    parser.add_argument("--max-bytes", type=int, default=limits.max_bytes, help="largest request body")
    parser.add_argument("--max-page-views", type=int, default=limits.max_page_views, help="most rows a request")
    parser.add_argument("--seconds", type=float, default=limits.seconds, help="time limit of one request")
    parser.add_argument("--max-new-users", type=int, default=limits.max_new_users,
                        help="most users a request may hold that the model never saw (each one is embedded)")
    parser.add_argument("--max-sessions", type=int, default=limits.max_sessions,
                        help="most sessions the models may read for a request (each user's last ones)")
    parser.add_argument("--max-tokens", type=int, default=limits.max_tokens,
                        help="most tokens the models may read for a request")
    parser.add_argument("--header-seconds", type=float, default=limits.header_seconds,
                        help="time a client has to send a request's head (then 408)")
    parser.add_argument("--body-seconds", type=float, default=limits.body_seconds,
                        help="time a client has to send a request's body (then 408)")


def serve(args: argparse.Namespace) -> int:
    """Serve the champion model (`sessionbert_core.serving.http`) until interrupted."""
    from dataclasses import fields
    from pathlib import Path

    from sessionbert_core.serving.http import Limits
    from sessionbert_core.serving.http import serve as run_server

    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers is at least 1")
    model = Path(args.model) if args.model else settings_from_env().home / "serving_model"
    run_server(model, args.host, args.port, args.workers,
               Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionbert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="materialize the asset graph and print a summary")
    run_parser.add_argument("--select", help="comma-separated asset names (default: all)")
    run_parser.add_argument("--days", help="the day partitions to run, FIRST[:LAST] (default: every day the landing "
                                           "folder's files hold)")
    run_parser.add_argument("--verbose", action="store_true",
                            help="print every Dagster event and every asset's figures (default: one line per asset)")
    recommend_parser = sub.add_parser("recommend", help="print one user's top-5 new services and persona")
    recommend_parser.add_argument("user_id")
    serve_parser = sub.add_parser("serve", help="serve the champion model over HTTP (docs/serving.md)")
    _serve_arguments(serve_parser)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.select, args.days, args.verbose)
        if args.command == "recommend":
            return recommend(args.user_id)
        if args.command == "serve":
            return serve(args)
    except ValueError as error:  # bad configuration: say what is wrong, no stack trace
        print(f"sessionbert: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
