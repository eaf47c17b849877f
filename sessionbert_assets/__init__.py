"""SessionBERT's Dagster layer: assets, resources and the Definitions; the logic lives in sessionbert_core."""
