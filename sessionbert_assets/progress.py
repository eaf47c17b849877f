"""What `sessionbert run` prints while it runs: one line per asset as it starts and ends, a bar while a model trains.

Dagster's console logger prints every event at DEBUG (some 900 lines for one run of the graph); the whole event
log is kept in the Dagster instance anyway, and `run` writes it to a log file too (`log_file_logger`). On the
terminal, `progress_logger` keeps what a person follows: the asset that is running, how long each took with the
one figure that matters, a failure with its message, and, while a model trains, a bar with its steps,
tokens/s and time left (redrawn in place on a terminal; on a pipe or in CI only the asset lines, so a log stays
short). `sessionbert run --verbose` brings Dagster's console logger back instead.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata

# the figure shown when an asset ends: the first of these its materialization carries
FIGURE_KEYS = {
    "landing_folder": ("files/events", "world/sessions"), "landing_files": ("rows",),
    "quarantined_events": ("rows", "share_of_rows_read"), "session_splits": ("sessions",),
    "next_activity_baselines": ("n_sessions",), "next_activity_peers": ("sasrec/test_service_accuracy",),
    "tokenizer": ("vocabulary_size",), "pretrained_model": ("best_validation_loss",),
    "finetuned_model": ("best_validation_loss",), "model_evaluation": ("service/served",),
    "session_embeddings": ("sessions",), "cluster_sweep": ("users",), "persona_mapping": ("personas",),
    "persona_evaluation": ("nmi",), "ranker_selection": ("ranker",), "recommendation_table": ("users_recommended",),
    "hit_at_k_evaluation": ("persona_fit/true",), "serving_model": ("registered_model",),
}
# `ProgressCallback`'s report: step 120/400 epoch 1.00 loss 3.1 12,345 tokens/s, 40 s left
TRAINING_STEP = re.compile(r"^step (?P<step>\d+)/(?P<steps>\d+) .*?(?P<rate>[\d,]+) tokens/s, (?P<left>\d+) s left")
BAR_WIDTH = 24


def figure(asset: str, metadata: dict) -> str:
    """`name value` of the first figure of FIGURE_KEYS the asset's materialization `metadata` carries ('' for none)."""
    from sessionbert_assets.cli import _value

    key = next((k for k in FIGURE_KEYS.get(asset, ()) if k in metadata), None)
    return f"{key} {_value(metadata[key])}" if key else ""


class Progress(logging.Handler):
    """Turns a run's Dagster events into the terminal's lines (see the module docstring)."""

    def __init__(self, stream=None):
        super().__init__(logging.DEBUG)
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())  # a terminal: redraw lines in place
        self.started: dict[str, float] = {}
        self.figures: dict[str, list[str]] = {}
        self.drawn = False  # a live line is on the screen, waiting for its end

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not has_log_record_metadata(record):
                return
            meta = get_log_record_metadata(record)
            event, step = meta.get("dagster_event"), meta.get("step_key") or ""
            if event is None:
                self._message(step, meta.get("orig_message", ""))
            elif event.event_type_value == "STEP_START" and not _is_check(step):
                self.started[step] = time.perf_counter()
                if self.live:
                    self._draw(f"{_clock()}  ▸ {step} ...")
            elif event.event_type_value == "ASSET_MATERIALIZATION" and (
                    event.partition is None or step not in self.figures):  # of a range of days: the first
                materialization = event.event_specific_data.materialization
                shown = figure(materialization.asset_key.to_user_string(), materialization.metadata)
                self.figures.setdefault(step, []).append(shown)
            elif event.event_type_value == "STEP_SUCCESS" and not _is_check(step):
                seconds = time.perf_counter() - self.started.pop(step, time.perf_counter())
                shown = "  ".join(f for f in self.figures.pop(step, []) if f)
                self._line(f"{_clock()}  ✓ {step:<26} {seconds:7.1f} s  {shown}".rstrip())
            elif event.event_type_value == "STEP_FAILURE":
                error = event.step_failure_data.error
                self._line(f"{_clock()}  ✗ {step} failed: {(error.message if error else '').strip()}")
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                evaluation = event.event_specific_data
                if not evaluation.passed:
                    self._line(f"{_clock()}  ! {evaluation.asset_key.to_user_string()}:{evaluation.check_name} did "
                               "not pass (the summary says why)")
        except Exception:  # a line that cannot be drawn must never stop a run
            self.handleError(record)

    def _message(self, step: str, message: str) -> None:
        """A training step's report, as a bar on a terminal (nothing on a pipe: the log file holds it)."""
        match = TRAINING_STEP.match(message)
        if match and self.live:
            done, total = int(match["step"]), max(int(match["steps"]), 1)
            filled = round(BAR_WIDTH * done / total)
            self._draw(f"{_clock()}  ▸ {step:<26} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} steps "
                       f"{match['rate']} tokens/s, {match['left']} s left")

    def _draw(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self.drawn = True

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.drawn else "") + text + "\n")
        self.stream.flush()
        self.drawn = False


def _is_check(step: str) -> bool:
    return "_check_" in step


def _clock() -> str:
    return time.strftime("%H:%M:%S")


@dg.logger(description="One line per asset as it starts and ends, a bar while a model trains (`sessionbert run`).")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("sessionbert.progress", logging.DEBUG)
    logger.addHandler(Progress())
    return logger


@dg.logger(config_schema={"path": str}, description="Every event of a run, at DEBUG, appended to a file.")
def log_file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    path = Path(init_context.logger_config["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.Logger("sessionbert.log_file", logging.DEBUG)
    logger.addHandler(handler)
    return logger


LOGGERS = {"console": dg.colored_console_logger, "progress": progress_logger, "log_file": log_file_logger}


def quiet_run_config(log_file: Path) -> dict:
    """Loggers of a `sessionbert run`: the progress lines on the terminal, every event in `log_file`."""
    return {"loggers": {"progress": {}, "log_file": {"config": {"path": str(log_file)}}}}
