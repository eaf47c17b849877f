"""The Spark path of `session_splits`: `sessionbert_external/spark_sessions.py` launched through Dagster Pipes.

Here a local `spark-submit` (the `spark_pipes` client, a subprocess); on a cluster the same script goes
through Dagster's own Pipes clients (`PipesEMRClient`, `PipesDatabricksClient`, or this subprocess client
with `master: sc://host:15002` for Spark Connect): docs/scaling.md, *Spark for sessions, text and splits*.
"""

from __future__ import annotations

import shutil
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from sessionbert_core.config import settings_from_env
from sessionbert_core.data import access_log, serialize

SCRIPT = Path(__file__).resolve().parents[1] / "sessionbert_external" / "spark_sessions.py"


class SparkResource(dg.ConfigurableResource):
    """Where the Spark job runs: the master, and the spark-submit that launches it."""

    master: str = Field(default=settings_from_env().spark_master,
                        description="SESSIONBERT_SPARK_MASTER: local[*], spark://host:7077, yarn, or sc://host:15002 "
                                    "(Spark Connect)")
    spark_submit: str = Field(default="", description="the spark-submit to run ('' = the one of the installed "
                                                      "pyspark, beside this Python)")

    def command(self) -> list[str]:
        submit = self.spark_submit or str(Path(sys.executable).parent / "spark-submit")
        if self.master.startswith("sc://"):  # Spark Connect: the driver is a plain Python client
            return [sys.executable, str(SCRIPT)]
        return [submit, "--master", self.master, "--conf", "spark.ui.enabled=false", str(SCRIPT)]

    def env(self) -> dict[str, str]:
        """The driver and the Python workers run this Python (the project's environment)."""
        return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}

    def problem(self) -> str | None:
        """Why the job cannot start here (no pyspark, no Java), or None."""
        if self.master.startswith("sc://"):
            return None
        submit = self.command()[0]
        if not (Path(submit).exists() or shutil.which(submit)):
            return (f"SESSIONBERT_ENGINE=spark needs PySpark: {submit} is missing (pip install 'sessionbert[spark]', "
                    "or set the spark resource's spark_submit)")
        if not (settings_from_env().java_home or shutil.which("java")):
            return ("SESSIONBERT_ENGINE=spark needs a Java runtime for Spark (17 or 21): none on PATH and no "
                    "JAVA_HOME (Debian: apt-get install openjdk-17-jre-headless)")
        return None


def job(home: Path, seed: int, master: str, days: list[date] | None = None) -> dict:
    """The Spark job's extras: where to read and write, the days to serialize (all where None), the
    serialization rules, the split's seed."""
    return {
        "days": [day.isoformat() for day in days] if days else [],
        "events": str(home / "raw_sessions.parquet"), "billing": str(home / "billing_records.parquet"),
        "output": str(home / "spark" / "session_splits"), "seed": seed, "master": master,
        "proportions": list(serialize.SPLIT_PROPORTIONS),
        "rules": {"session_gap_minutes": access_log.SESSION_GAP_MINUTES, "max_daily_services":
                  serialize.MAX_DAILY_SERVICES, "max_daily_pages": serialize.MAX_DAILY_PAGES,
                  "top_billed": serialize.TOP_BILLED},
    }


def spark_sessions(context: dg.AssetExecutionContext, spark: SparkResource, pipes: dg.PipesSubprocessClient,
                   home: Path, seed: int, days: list[date] | None = None) -> tuple[pl.DataFrame, dict]:
    """The sessions of `days` the Spark job wrote (read back in the polars path's schema and order), and what it
    reported."""
    if problem := spark.problem():
        raise dg.Failure(description=problem)
    extras = job(home, seed, spark.master, days)
    context.log.info(f"launching the Spark job through Dagster Pipes: {' '.join(spark.command())}")
    invocation = pipes.run(context=context, command=spark.command(), extras={"job": extras}, env=spark.env())
    reported = {key: value.value for key, value in invocation.get_materialize_result().metadata.items()}
    schema = serialize.SESSION_SCHEMA | {"split": serialize.SPLITS}
    sessions = (pl.read_parquet(Path(extras["output"]) / "*.parquet").select(list(schema)).cast(schema)
                .sort("user_id", "start", "session_id"))
    return sessions, reported
