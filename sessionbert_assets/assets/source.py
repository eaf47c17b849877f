"""The landing folder the pipeline reads: the synthetic world's, or the user's own."""


import json
from collections import Counter
from pathlib import Path

import dagster as dg

from sessionbert_assets.partitions import sync
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.data.ingest import IngestError, discover
from sessionbert_core.personas.mapping import PersonaDefinitions, load_definitions
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import WorldPaths


@dg.asset(group_name="data", kinds={"python", "parquet"})
def landing_folder(context: dg.AssetExecutionContext, sessionbert: SessionBertResource) -> dict:
    """The folder of event files, billing files, access logs and exports that ingestion reads.

    With `SESSIONBERT_SOURCE=synthetic` this generates the synthetic cloud console (deterministic for
    the profile and seed; regenerated only when they change), whose ground truth stays beside it,
    outside the landing folder. Otherwise it lists the user's folder, which is never modified.
    Each file it lists becomes a `landing_files` partition (a file gone from the folder is forgotten there).
    """
    if sessionbert.is_synthetic:
        world = generate_world(sessionbert.world_root(), sessionbert.profile_settings.world, sessionbert.seed)
        folder, truth = world.landing, str(world.root)
        personas = sessionbert.personas or str(world.personas_yaml)
        manifest = json.loads(world.manifest.read_text())
        extra = {f"world/{k}": dg.MetadataValue.int(v) for k, v in manifest["totals"].items()}
        extra |= {"world/services": manifest["n_services"], "world/activities": manifest["n_activities"],
                  "world/tasks": manifest["n_tasks"], "world/personas": manifest["n_personas"]}
    else:
        folder, truth, personas, extra = Path(sessionbert.source).expanduser().resolve(), None, sessionbert.personas, {}
    try:
        files = discover(folder, sessionbert.pseudonym_key())
    except IngestError as error:
        raise dg.Failure(description=str(error)) from error
    kinds = Counter(f.kind for f in files)  # what each file was recognized as, by its content
    partitions = sync(context.instance, [f.name for f in files if f.kind not in ("ignored", "mapping")])
    context.add_output_metadata({
        "folder": dg.MetadataValue.path(str(folder)),
        "synthetic": sessionbert.is_synthetic,
        **{f"files/{k}": v for k, v in sorted(kinds.items())},
        "bytes": sum(f.path.stat().st_size for f in files if f.kind != "ignored"),
        "landing_files_partitions": len(partitions),
        **extra,
    })
    return {"folder": str(folder), "world": truth, "personas": personas or None,
            "files": [f.name for f in files if f.kind != "ignored"]}


def world_paths(landing: dict) -> WorldPaths | None:
    """The synthetic world's paths (for its ground truth), or None for a user's landing folder."""
    return WorldPaths(Path(landing["world"])) if landing.get("world") else None


def persona_definitions(landing: dict) -> PersonaDefinitions | None:
    """The persona definitions of the run (SESSIONBERT_PERSONAS or the world's own), None when there are none."""
    if not landing.get("personas"):
        return None
    try:
        return load_definitions(landing["personas"])
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
