"""What every table asset holds, column by column (`dagster/column_schema`), and the attributes each asset
carries in the UI: owners and a code version (`code_version`: a digest of the asset's code and of the
project code it calls, so a changed asset reads as changed). A test checks each schema against the columns
the asset really writes."""

from __future__ import annotations

import dagster as dg

from sessionbert_assets.code_version import code_version

OWNERS = ["team:sessionbert"]
USER = ("string", "the user: the id as the landing folder gives it, or its keyed pseudonym (access logs, exports)")
SESSION = ("string", "the session, unique per user")
PERSONA = ("string", "the persona the cluster maps to (`A + B` where two are merged), or `Cluster n`")
COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "raw_sessions": {
        "user_id": USER, "session_id": SESSION,
        "timestamp": ("datetime", "when the page was viewed, UTC"),
        "service": ("string", "the service of the page view (its activity's part before `;`)"),
        "page": ("string", "the page within the service"),
        "country": ("string", "where the user was (an export's region or country), if known"),
        "city": ("string", "the city, if known"),
        "billing_tier": ("string", "Low, Medium, High or Very High, if known")},
    "quarantined_events": {
        "source_file": ("string", "the landing-folder file the record came from"),
        "line": ("int", "its line (or record index, for CloudTrail); none for a refused file"),
        "kind": ("string", "event, billing or file (a file refused whole)"),
        "reason": ("string", "the first rule the record broke, from a fixed list"),
        "detail": ("string", "what about it (at most 60 characters of the value)"),
        "raw": ("string", "the record as written, identifiers replaced by their pseudonyms")},
    "billing_records": {
        "user_id": USER, "date": ("date", "the day billed"), "service": ("string", "the service billed"),
        "cost": ("float", "the cost, in the billing file's currency")},
    "session_splits": {
        "user_id": USER, "session_id": SESSION, "day": ("date", "the day the session began (UTC)"),
        "start": ("datetime", "its first page view, UTC"), "n_activities": ("int", "its page views"),
        "context": ("string", "the sections known when it began: location, billing, the day's services and pages"),
        "activities": ("list", "its `service;page` activities in order"),
        "text": ("string", "context and activities as the model reads them"),
        "split": ("string", "train, validation or test (whole users)")},
    "session_embeddings": {
        "user_id": USER, "session_id": SESSION, "start": ("datetime", "the session's first page view, UTC"),
        "embedding": ("array", "the pretrained encoder's mean-pooled vector of the session")},
    "cluster_centroids": {
        "cluster": ("int", "the cluster"), "centroid": ("array", "its unit-length centre in the persona space"),
        "size": ("int", "users in it"), "top_activities": ("list", "its ten most frequent activities"),
        "top_activity_shares": ("list", "their shares of its activities")},
    "persona_mapping": {
        "cluster": ("int", "the cluster"), "persona": PERSONA,
        "probability": ("float", "the mapped persona's probability (a merged tag: the sum of its personas')"),
        "*": ("float", "one column per defined persona: its probability for the cluster")},
    "user_personas": {
        "user_id": USER, "cluster": ("int", "the user's nearest centroid"), "persona": PERSONA,
        "probability": ("float", "that persona's probability for the cluster")},
    "next_activity_peers": {
        "user_id": USER, "session_id": SESSION,
        "previous": ("string", "the prefix's last activity"),
        "target_service": ("string", "the held-out last activity's service"),
        "target_page": ("string", "the held-out last activity"),
        "services": ("list", "the peer's most probable next services"),
        "service_probabilities": ("list", "their probabilities (the activity distribution summed by service)"),
        "pages": ("list", "the peer's most probable next activities"),
        "page_probabilities": ("list", "their probabilities"),
        "predicted_service": ("string", "the most probable service"),
        "predicted_page": ("string", "the most probable activity"),
        "peer": ("string", "markov_backoff, vsknn, gru4rec or sasrec"),
        "split": ("string", "validation or test")},
    "recommendation_table": {
        "user_id": USER, "rank": ("int", "1 to 5"), "service": ("string", "a service the user has not used"),
        "score": ("float", "the ranker's score: recommendation count share, or persona adoption share"),
        "persona": PERSONA, "model_version": ("string", "the registered model version that made it"),
        "generated_at": ("datetime", "when the table was made, UTC"),
        "page": ("string", "the page head's landing page for the service"),
        "ranker": ("string", "the ranker that served (chosen on validation users)")},
}


def column_schema(asset: str) -> dict:
    """The `dagster/column_schema` metadata of a table asset (`{}` for the others)."""
    if asset not in COLUMNS:
        return {}
    columns = [dg.TableColumn(name, kind, description) for name, (kind, description) in COLUMNS[asset].items()]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def described(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The asset with owners, its code version and, for a table, its column schema."""
    function = asset.op.compute_fn
    version = code_version(getattr(function, "decorated_fn", function))
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(
        owners=OWNERS, code_version=version, metadata={**spec.metadata, **column_schema(spec.key.to_user_string())}))
