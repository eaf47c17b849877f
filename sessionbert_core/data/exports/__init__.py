"""Event pipelines' exports read as they are: AWS CloudTrail, Snowplow, Segment and RudderStack, GA4's
BigQuery export, and any other event table through a mapping file (`landing.yaml`).

Each format is recognized by its content (`recognize`), never by its file name, and read record by
record to the landing folder's page-view columns (`records.PageViews`), which ingestion then
validates like any event file: every record read is kept, quarantined with its record index, reason
and raw record, or filtered and counted by reason. Users are pseudonymized, and so is every
identifier in a raw record kept for the quarantine.
"""
